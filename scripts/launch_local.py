"""Start N workers of a multi-worker run on this machine, to try it.

    python scripts/launch_local.py --workers 2 -- train.py trainer.distribution=multi_worker debug=fast

Each worker is the same command with its own `TF_CONFIG` (the cluster on free
127.0.0.1 ports, and its index: worker 0 is the chief, which logs to MLflow).
Their output is streamed line by line, prefixed `[worker i]`. Exits with the
first failing worker's status (0 when all finish); a worker still running
`--grace` seconds after another failed is stopped (SIGTERM). Ctrl-C or
SIGTERM is passed on to every worker. On a cluster, use SLURM instead
(README, "More than one machine").
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def free_ports(count):
    """`count` distinct ports free on 127.0.0.1 now (the OS picks them)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _stream(pipe, prefix, lock):
    for line in iter(pipe.readline, ""):
        with lock:
            sys.stdout.write(f"{prefix}{line}")
            sys.stdout.flush()
    pipe.close()


def launch(command, workers, grace=60.0):
    """Runs `command` as `workers` processes of one cluster; returns the exit status."""
    if command and command[0].endswith(".py"):
        command = [sys.executable, *command]
    ports = free_ports(workers)
    lock = threading.Lock()
    processes, threads = [], []
    for index in range(workers):
        env = {**os.environ, "TF_CONFIG": tf_config(ports, index), "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        thread = threading.Thread(target=_stream, args=(process.stdout, f"[worker {index}] ", lock), daemon=True)
        thread.start()
        threads.append(thread)

    def forward(signum, frame):
        for p in processes:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        failed_at = None
        while any(p.poll() is None for p in processes):
            if failed_at is None and any(p.poll() not in (None, 0) for p in processes):
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for index, p in enumerate(processes):
                    if p.poll() is None:
                        print(f"launch_local: worker {index} still running {grace:.0f} s after another failed: "
                              "stopping it (SIGTERM).", file=sys.stderr)
                        p.terminate()
                failed_at = float("inf")
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for thread in threads:
        thread.join(timeout=5)
    codes = [p.returncode for p in processes]
    for index, code in enumerate(codes):
        if code != 0:
            print(f"launch_local: worker {index} exited with status {code}.", file=sys.stderr)
    return next((c for c in codes if c != 0), 0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="%(prog)s --workers N -- train.py [overrides]")
    parser.add_argument("--workers", type=int, default=2, help="number of worker processes (default 2)")
    parser.add_argument("--grace", type=float, default=60.0,
                        help="seconds the others may run on after a worker failed (default 60)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command every worker runs")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.workers < 1:
        parser.error("give --workers N (N >= 1) and a command after --, e.g. -- train.py trainer.distribution=multi_worker")
    return launch(command, args.workers, args.grace)


if __name__ == "__main__":
    sys.exit(main())
