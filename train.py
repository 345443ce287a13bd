"""Fine-tune a backbone on a task, tracked in MLflow. A Hydra app over conf/.

    python train.py                                   # defaults: tiny GPT-2, bundled data, local store
    python train.py backbone=gemma_2b lora.rank=4     # any preset, LoRA rank 4
    python train.py -m lora.rank=2,4,8 optimizer.learning_rate=1e-4,3e-4   # a grid sweep
    python train.py debug=fast                        # a few steps end to end
    python train.py +check=true                       # only the pre-flight check (about a second)

Returns the validation metric named by `task.metric` (what sweeps optimise).
"""

import gc
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lab import console, preflight, schema
from lab.errors import report_user_errors

schema.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    checked = preflight.check(cfg, hydra_cfg.runtime.output_dir)  # before TensorFlow and MLflow: fails in a second
    if cfg.get("check"):
        print("\n".join(["Pre-flight check passed:", *checked]))
        return None
    print(OmegaConf.to_yaml(cfg, resolve=True))
    console.quiet_start(verbose=bool(hydra_cfg.verbose) or os.environ.get("HYDRA_FULL_ERROR") == "1")

    import keras

    import backbones
    from lab import artifacts, checkpoint, data, distribution, mlflow_model, streaming, sweep, tracking, training
    from lab.tasks import build_task, make_train_batches, task_arrays

    checkpoint_dir = checkpoint.directory_for(cfg)
    state = checkpoint.read_state(checkpoint_dir) if cfg.trainer.checkpoint else None
    parent = sweep.parent_run_id(hydra_cfg.sweep.dir) if hydra_cfg.mode == RunMode.MULTIRUN else None
    with distribution.scope(cfg.trainer), tracking.run(cfg.tracking, run_id=state and state["run_id"], parent_run_id=parent,
                      job_num=parent and hydra_cfg.job.num, checkpoint_dir=cfg.trainer.checkpoint and checkpoint_dir) as run:
        run_id = run.info.run_id
        if state:
            print(f"Resuming MLflow run {run_id} from its epoch-{state['epoch']} checkpoint in {checkpoint_dir}")
        else:
            tracking.log_config(cfg, hydra_cfg.runtime.output_dir, hydra_cfg.runtime.choices, hydra_cfg.overrides.task)
        training.seed_everything(cfg.seed, cfg.trainer.deterministic)

        train_split, val_split = (streaming if streaming.enabled(cfg.data) else data).load(cfg.data, cfg.seed)
        tracking.log_datasets(cfg.data, train_split, val_split)  # and labels.json

        dtype = {"dtype": cfg.backbone.dtype} if cfg.backbone.dtype else {}
        # quantize=int8: each layer quantized as it is read, so the float model is never held.
        backbone = backbones.Backbone.from_preset(cfg.backbone.preset, load_weights=cfg.backbone.load_weights,
                                                  trainable=cfg.backbone.trainable, quantize=cfg.backbone.quantize,
                                                  **dtype)
        if cfg.lora.rank is not None:
            backbone.enable_lora(cfg.lora.rank, alpha=cfg.lora.alpha, targets=list(cfg.lora.targets))
        base = artifacts.frozen_base(cfg.backbone, backbone)  # None: the backbone's weights train
        if cfg.trainer.remat:
            backbone.enable_remat()

        task = build_task(cfg.task, backbone, cfg.trainer.sequence_length, packing=cfg.data.packing)
        train_batches = make_train_batches(task, train_split, cfg.data, cfg.trainer.batch_size, cfg.seed,
                                           epoch=state["epoch"] if state else 0)
        val_batches = training.EpochBatches(task_arrays(task, val_split, cfg.data, pack=False), cfg.trainer.batch_size, cfg.seed, shuffle=False)
        total_steps = cfg.trainer.epochs * len(train_batches)
        if cfg.trainer.max_steps:
            total_steps = min(total_steps, cfg.trainer.max_steps)
        task.compile(optimizer=training.build_optimizer(cfg.optimizer, total_steps), jit_compile=cfg.trainer.jit_compile)
        start_epoch = checkpoint.restore(task, checkpoint_dir, base, state, train_batches) if state else 0
        if not state:
            tracking.log_parameter_counts(task)

        callbacks = [tracking.epoch_callback(),
                     training.StepLogger(cfg.trainer.log_every_n_steps,
                                         cfg.trainer.batch_size * cfg.trainer.sequence_length, total_steps)]
        if cfg.trainer.checkpoint:
            callbacks.append(checkpoint.EpochCheckpoint(checkpoint_dir, run_id, base, cfg.trainer.checkpoint_every_n_steps))
        if cfg.trainer.early_stopping_patience:
            callbacks.append(keras.callbacks.EarlyStopping(cfg.task.metric, patience=cfg.trainer.early_stopping_patience,
                                                           mode=cfg.task.metric_mode, restore_best_weights=True))
        # shuffle=False: EpochBatches shuffles per (seed, epoch), so a resumed run sees the same order.
        # steps_per_epoch: a run stopped by max_steps in its first epoch shows "5/5", not "8/8".
        task.fit(train_batches, validation_data=val_batches, epochs=cfg.trainer.epochs, initial_epoch=start_epoch,
                 steps_per_epoch=min(len(train_batches), cfg.trainer.max_steps or len(train_batches)),
                 callbacks=callbacks, shuffle=False, verbose=1 if sys.stdout.isatty() else 2)

        gc.collect()  # finalise the data generator of a run stopped mid-epoch (max_steps) while Python is alive
        metrics = task.evaluate(val_batches, return_dict=True, verbose=0)
        tracking.log_metrics({f"final_val_{k}": float(v) for k, v in metrics.items()}, wait=True)  # log_model reads them
        saved = mlflow_model.log_model(task, base, cfg, train_split.label_names,
                                       mlflow_model.input_examples(task, val_split), chat=val_split.format == "chat")
        checkpoint.clear(checkpoint_dir)

    value = float(metrics[cfg.task.metric.removeprefix("val_")])
    tracking.print_summary(cfg, run_id, value, saved)
    return value


if __name__ == "__main__":
    main()
