"""Groups the jobs of a Hydra multirun (`-m`) under one MLflow parent run.

On sweep start the parent run is created (which also creates the sqlite
store once, before any job starts) and its id written to
`<sweep dir>/mlflow_parent_run_id`, where each job finds it. On sweep end the
parent records the best job's metric and overrides. If the sweep dies, an
exit hook still ends the parent, FAILED.
"""

import atexit
import os
import shlex
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

PARENT_FILE = "mlflow_parent_run_id"


def parent_run_id(sweep_dir):
    path = Path(sweep_dir) / PARENT_FILE
    return path.read_text().strip() if path.exists() else None


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config, **kwargs):
        import mlflow

        from lab.console import quiet_store
        from lab.tracking import ensure_experiment, process_tags

        if not (config.hydra.verbose or os.environ.get("HYDRA_FULL_ERROR") == "1"):
            quiet_store()  # the parent creates the store, before any job quiets the terminal
        experiment_id = ensure_experiment(config.tracking)
        client = mlflow.MlflowClient()
        overrides = list(config.hydra.overrides.task)
        run = client.create_run(experiment_id, run_name=f"sweep {Path(config.hydra.sweep.dir).name}", tags={
            "sweep": "true", "command": " ".join(shlex.quote(a) for a in sys.argv),
            "sweep.overrides": " ".join(overrides), "sweep.sweeper": config.hydra.sweeper._target_,
            **process_tags(),  # a sweep killed with -9 is found and marked KILLED by the next run
        })
        self.run_id = run.info.run_id
        client.log_text(self.run_id, OmegaConf.to_yaml(config.hydra.sweeper), "sweeper.yaml")
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(self.run_id)
        atexit.register(self._end, client, "FAILED")

    def on_multirun_end(self, config, **kwargs):
        import mlflow

        client = mlflow.MlflowClient()
        metric, mode = config.task.metric, config.task.metric_mode
        children = client.search_runs(
            [client.get_run(self.run_id).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.run_id}' and attributes.status = 'FINISHED'",
        )
        # In job order (a job's run name ends with its number), so a tie goes to the first job, as in
        # Optuna's "Best" line and Hydra's results, not to whichever job the search returned first.
        scored = sorted((r for r in children if f"final_{metric}" in r.data.metrics),
                        key=lambda r: int(r.info.run_name.rsplit("-", 1)[-1]))
        if scored:
            pick = max if mode == "max" else min
            best = pick(scored, key=lambda r: r.data.metrics[f"final_{metric}"])
            client.log_metric(self.run_id, f"best_{metric}", best.data.metrics[f"final_{metric}"])
            client.set_tag(self.run_id, "best_run_id", best.info.run_id)
            client.set_tag(self.run_id, "best_overrides", best.data.tags.get("overrides", ""))
            if config.tracking.get("register"):  # the jobs left registering to the sweep
                from lab import registry

                registry.register_best(client, self.run_id, client.get_run(best.info.run_id),
                                       config.tracking.register, config.tracking.alias, metric)
        client.log_metric(self.run_id, "jobs_finished", len(children))
        self._end(client, "FINISHED")

    def _end(self, client, status):
        run_id, self.run_id = getattr(self, "run_id", None), None
        if run_id is not None and client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status)
