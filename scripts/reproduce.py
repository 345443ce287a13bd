"""Re-runs a logged run from its stored config and compares the metrics.

    python scripts/reproduce.py RUN_ID [--tracking-uri URI] [--atol 0]

Downloads the run's resolved `config.yaml`, runs `train.py` on exactly that
config (as a new run tagged `reproduce_of=RUN_ID`, in the same store), then
compares every `final_val_*` metric. Exit code 0 if they match within
`--atol` (default 0: bit-identical, as with `trainer.deterministic=true`), 1 if not.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_id")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd().absolute() / 'mlflow.db'}")
    parser.add_argument("--atol", type=float, default=0.0)
    args = parser.parse_args()

    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    client = mlflow.MlflowClient()
    original = client.get_run(args.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load(Path(client.download_artifacts(args.run_id, "config.yaml", tmp)).read_text())
        config["tracking"]["uri"] = args.tracking_uri if config["tracking"]["uri"] is None else config["tracking"]["uri"]
        config["tracking"]["reproduce_of"] = args.run_id
        # Runs from before tracking.save had log_preset (now a config error): what they save does not
        # change their metrics, so the reproduction saves per tracking.save's default.
        config["tracking"].pop("log_preset", None)
        config["defaults"] = ["train_schema", {"hydra": "default"}, "_self_"]
        (Path(tmp) / "reproduce.yaml").write_text(yaml.safe_dump(config))
        command = [sys.executable, str(ROOT / "train.py"), "--config-dir", tmp, "--config-name", "reproduce"]
        print("running:", " ".join(command))
        subprocess.run(command, check=True)
    runs = client.search_runs([original.info.experiment_id], f"tags.reproduce_of = '{args.run_id}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    again = runs[0]
    print(f"original run {args.run_id}  vs  reproduction {again.info.run_id}")
    matched = True
    for key in sorted(k for k in original.data.metrics if k.startswith("final_")):
        a, b = original.data.metrics[key], again.data.metrics.get(key)
        ok = b is not None and abs(a - b) <= args.atol
        matched &= ok
        print(f"  {key:<28} {a:.6f}  {b if b is None else f'{b:.6f}'}  {'match' if ok else 'DIFFERS'}")
    print("metrics match" if matched else "metrics differ")
    return 0 if matched else 1


if __name__ == "__main__":
    sys.exit(main())
