"""Exports a trained model (an MLflow run's or a preset's) to another format.

    python scripts/export.py RUN_ID_OR_PRESET --to transformers|peft|preset OUT_DIR
        [--tracking-uri URI] [--max-shard-size GB]

RUN_ID_OR_PRESET: an MLflow run id (its `model/` or `preset/` artifacts,
rebuilt with `lab.artifacts.load_run_model`) or anything `from_preset` takes
(a built-in name, hf://, kaggle://, a directory; a task preset when it has
`task.json`). `--to transformers`: a transformers checkpoint of the task
(`*ForCausalLM`, `*ForSequenceClassification`) or the bare backbone, LoRA
merged; `peft`: the LoRA adapter in PEFT's format; `preset`: our preset
(merged). E.g. `python scripts/export.py gpt2_tiny_en --to transformers /tmp/gpt2_hf`.
"""

import argparse
import re
import sys
from pathlib import Path


def load(source, tracking_uri=None):
    """The task (or bare backbone) that `source` names."""
    import backbones
    import tasks
    from backbones.handles import resolve_preset
    from tasks.task_presets import TASK_FILE

    if re.fullmatch(r"[0-9a-f]{32}", source) and not Path(source).exists():
        from lab.artifacts import load_run_model

        return load_run_model(source, tracking_uri=tracking_uri)
    if (resolve_preset(source) / TASK_FILE).is_file():
        return tasks.Task.from_preset(source)
    return backbones.Backbone.from_preset(source)


def export(model, to, out, max_shard_size=5.0):
    backbone = getattr(model, "backbone", model)
    if to == "transformers":
        model.export_to_transformers(out, max_shard_size=max_shard_size)
    elif to == "peft":
        if backbone.lora_spec is None:
            raise SystemExit(f"--to peft: the model has no LoRA adapter (it was not trained with lora.rank set); "
                             "export it with --to transformers or --to preset.")
        backbone.save_lora_weights(out, format="peft")
    else:
        model.save_to_preset(out, max_shard_size=max_shard_size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="MLflow run id or preset")
    parser.add_argument("--to", required=True, choices=["transformers", "peft", "preset"])
    parser.add_argument("out", help="output directory (replaced atomically)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store of the run (default: MLFLOW_TRACKING_URI)")
    parser.add_argument("--max-shard-size", type=float, default=5.0, help="GB per weights file")
    args = parser.parse_args(argv)
    from lab import console

    console.quiet_start()  # TensorFlow's start-up lines, as in train.py
    from backbones.errors import BackboneLabError

    try:
        export(load(args.source, args.tracking_uri), args.to, args.out, args.max_shard_size)
    except BackboneLabError as e:
        raise SystemExit(f"export failed: {e}") from e
    print(f"wrote {args.to} to {Path(args.out).absolute()}")


if __name__ == "__main__":
    sys.exit(main())
