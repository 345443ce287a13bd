"""Metrics that survive their tracking server: sent from a background thread,
kept while the server does not answer, sent when it answers again.

Every metric a run measures (epochs, steps, system metrics, final values)
goes through one `MetricLog`. Training never waits for the store. While the
store does not answer, unsent metrics stay in memory and are copied to a
journal file (one JSON line each), so a process that dies during an outage
still leaves them on disk; `python -m lab.metric_log JOURNAL` sends them
later. MLflow dedupes a metric sent twice (same key, step, time, value), so
retrying after a lost reply is safe.
"""

import json
import re
import sys
import threading
import time
from pathlib import Path

BATCH = 1000  # MLflow's limit of metrics in one log_batch call
RETRY_SECONDS = 2.0  # between attempts while the store does not answer


class MetricLog:
    """Sends metrics to `run_id` in the background, keeping what fails.

    Args:
        client: mlflow.MlflowClient. Of the run's store.
        run_id: str. The run the metrics belong to.
        journal: path. Where unsent metrics are copied during an outage
            (deleted once they are all sent).

    Example:
    >>> import mlflow, tempfile
    >>> tmp = Path(tempfile.mkdtemp())
    >>> client = mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    >>> run = client.create_run(client.create_experiment("doc", artifact_location=tmp.as_uri()))
    >>> log = MetricLog(client, run.info.run_id, tmp / "unsent.jsonl")
    >>> log.log({"loss": 0.5}, step=1)
    >>> log.close(timeout=30)
    True
    >>> [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]
    [(1, 0.5)]
    """

    def __init__(self, client, run_id, journal):
        self.client, self.run_id, self.journal = client, run_id, Path(journal)
        self.uri = client.tracking_uri
        self._pending = []  # mlflow Metric entities not yet acknowledged, oldest first
        self._journaled = 0  # how many of _pending are already in the journal
        self._closing = False
        self.down_since = None
        self.error = None
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="MetricLog")
        self._thread.start()

    def log(self, metrics, step=0, model_id=None):
        """Queues `{name: value}` at `step`, time-stamped now (linked to the
        LoggedModel `model_id`, if given); returns at once."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        with self._cond:
            self._pending += [Metric(k, float(v), now, int(step), model_id=model_id) for k, v in metrics.items()]
            self._cond.notify_all()

    @property
    def unsent(self):
        with self._cond:
            return len(self._pending)

    def wait_sent(self, timeout):
        """Blocks until everything queued is sent or `timeout` s pass; True if sent."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending, timeout)

    def close(self, timeout):
        """Sends what is left (waiting up to `timeout` s for the store), stops
        the thread; True if nothing is left unsent (else it is in the journal)."""
        sent = self.wait_sent(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        if not sent:
            self._write_journal()
        return sent

    def _loop(self):
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closing)
                if self._closing:
                    return
                batch = self._pending[:BATCH]
            try:
                self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
            except Exception as e:  # noqa: BLE001 - any failure of the store: keep the metrics, retry
                if _rejected(e):  # the store answered "no": retrying cannot help
                    print(f"MLflow refused {len(batch)} metrics of run {self.run_id}: {e}", file=sys.stderr)
                    self._sent(len(batch))
                    continue
                self._outage(e)
                with self._cond:
                    self._cond.wait_for(lambda: self._closing, RETRY_SECONDS)
                continue
            self._sent(len(batch))

    def _sent(self, count):
        with self._cond:
            del self._pending[:count]
            self._journaled = max(0, self._journaled - count)
            recovered = self.down_since is not None and not self._pending
            if recovered:
                print(f"MLflow at {self.uri} answers again after {time.time() - self.down_since:.0f} s: "
                      "every kept metric is sent.", file=sys.stderr)
                self.down_since = None
                self.journal.unlink(missing_ok=True)
                self._journaled = 0
            self._cond.notify_all()

    def _outage(self, error):
        if self.down_since is None:
            self.down_since, self.error = time.time(), error
            reason = _reason(error)
            print(f"MLflow at {self.uri} does not answer ({reason}): training goes on; metrics are kept "
                  f"and sent when it answers (copied meanwhile to {self.journal}).", file=sys.stderr)
        self._write_journal()

    def _write_journal(self):
        with self._cond:
            new, self._journaled = self._pending[self._journaled:], len(self._pending)
        if not new:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a", encoding="utf-8") as f:
            for m in new:
                f.write(json.dumps({"tracking_uri": self.uri, "run_id": self.run_id, "key": m.key,
                                    "value": m.value, "timestamp": m.timestamp, "step": m.step,
                                    "model_id": m.model_id}) + "\n")


def _reason(error):
    """The socket error inside MLflow's long retry message, else its first line.

    >>> _reason(Exception("API request to http://h/api failed with exception HTTPConnectionPool(...): "
    ...                   "Max retries exceeded (Caused by NewConnectionError('...: [Errno 111] Connection refused'))"))
    '[Errno 111] Connection refused'
    """
    text = str(error)
    found = re.search(r"\[Errno -?\d+\][^'\")\n]*", text)
    return found.group(0).strip() if found else text.splitlines()[0][:160] if text else type(error).__name__


def _rejected(error):
    """An MLflow error the store answered with (bad request), as opposed to no answer."""
    code = getattr(error, "error_code", None)
    return code in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST", "INVALID_STATE")


class SystemMetrics:
    """CPU, memory, disk and network of this machine every `interval` seconds,
    as MLflow's `system/...` metrics (what `log_system_metrics` logs), sent
    through `metric_log` so an outage loses none. MLflow's own monitor stops
    for good at the first request its server does not answer.

    Args:
        metric_log: MetricLog. Where the samples go.
        interval: float. Seconds between samples.
        first_step: int. Step of the first sample (a resumed run continues).
    """

    def __init__(self, metric_log, interval, first_step=0):
        from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
        from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
        from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

        import psutil

        self.metric_log, self.interval, self.step = metric_log, interval, first_step
        self.monitors = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
        self._process, self._rss = psutil.Process(), []  # this process's memory: MLflow samples only the system's
        self._sample()  # psutil's CPU percentage counts from the previous call: prime it
        for monitor in self.monitors:
            monitor.clear_metrics()
        self._rss = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="SystemMetrics")
        self._thread.start()

    def _sample(self):
        for monitor in self.monitors:
            monitor.collect_metrics()
        self._rss.append(self._process.memory_info().rss / 1e6)

    def _loop(self):
        while not self._stop.wait(self.interval):
            self._sample()
            self._publish()

    def _publish(self):
        metrics = {}
        for monitor in self.monitors:
            metrics.update({f"system/{k}": v for k, v in monitor.aggregate_metrics().items()})
            monitor.clear_metrics()
        if self._rss:
            metrics["system/process_rss_megabytes"], self._rss = max(self._rss), []
        if metrics:
            self.metric_log.log(metrics, step=self.step)
            self.step += 1

    def stop(self):
        """Stops sampling and logs a last sample (covering the time since the
        previous one), so a run shorter than `interval` has one too."""
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()
        self._publish()


def replay(journal):
    """Sends the metrics of a journal left by a run whose store was gone; returns how many."""
    import mlflow
    from mlflow.entities import Metric

    rows = [json.loads(line) for line in Path(journal).read_text(encoding="utf-8").splitlines() if line.strip()]
    by_run = {}
    for r in rows:
        by_run.setdefault((r["tracking_uri"], r["run_id"]), []).append(
            Metric(r["key"], r["value"], r["timestamp"], r["step"], model_id=r.get("model_id")))
    for (uri, run_id), metrics in by_run.items():
        client = mlflow.MlflowClient(uri)
        for start in range(0, len(metrics), BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + BATCH])
    Path(journal).unlink()
    return len(rows)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m lab.metric_log JOURNAL.jsonl   (sends a run's unsent metrics)")
    print(f"sent {replay(sys.argv[1])} metrics from {sys.argv[1]}")
