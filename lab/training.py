"""Training helpers for `train.py`: seeding, optimizer and schedule, batches,
and the callbacks that log steps and stop at `max_steps`."""

import math
import time

import keras
import numpy as np

from lab import tracking
from tasks import optimizers


def seed_everything(seed, deterministic=False):
    """Seeds Python, NumPy and the backend; optionally deterministic ops."""
    keras.utils.set_random_seed(seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@keras.saving.register_keras_serializable(package="backbone_lab")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak`, then constant, linear or cosine decay to 0.

    Example:
    >>> s = WarmupDecay(1.0, total_steps=10, warmup_steps=2, decay="linear")
    >>> [round(float(s(i)), 2) for i in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """

    def __init__(self, peak, total_steps, warmup_steps=0, decay="constant"):
        self.peak, self.total_steps, self.warmup_steps, self.decay = peak, total_steps, warmup_steps, decay

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = step / max(self.warmup_steps, 1)
        progress = keras.ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        if self.decay == "linear":
            after = 1.0 - progress
        elif self.decay == "cosine":
            after = 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        else:
            after = keras.ops.ones_like(progress)
        return self.peak * keras.ops.where(step < self.warmup_steps, warm, after)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps, "decay": self.decay}


def build_optimizer(cfg, total_steps):
    """The optimizer of the `optimizer` config node over `total_steps` steps
    (float32 master weights for bf16/fp16 variables: `tasks.optimizers`)."""
    schedule = WarmupDecay(cfg.learning_rate, total_steps, int(cfg.warmup_ratio * total_steps), cfg.schedule)
    return optimizers.build(cfg.name, schedule, cfg.weight_decay, cfg.clipnorm)


class EpochBatches(keras.utils.PyDataset):
    """Fixed-size batches of pre-tokenised arrays, reshuffled each epoch with
    a seed derived from (seed, epoch): epoch k's order does not depend on
    how many epochs this process has run, so a resumed run sees the same data.

    Args:
        arrays: tuple. `(x, y)` or `(x, y, sample_weight)`; x a dict of arrays.
        batch_size: int. Batch size; the last partial batch is dropped so
            every step has the same shape (one compiled graph).
        seed: int. Shuffle seed.
        epoch: int. Epoch to start at (when resuming).
    """

    def __init__(self, arrays, batch_size, seed, epoch=0, shuffle=True):
        super().__init__()
        self.arrays, self.batch_size, self.seed, self.shuffle = arrays, batch_size, seed, shuffle
        self.size = len(keras.tree.flatten(arrays[0])[0])
        self.epoch = epoch
        self.offset = 0  # batches of a resumed epoch trained before the interruption (`skip_to`)
        self._orders = {}

    def _order(self, epoch):
        if epoch not in self._orders:
            rng = np.random.default_rng([self.seed, epoch])
            self._orders = {epoch: rng.permutation(self.size) if self.shuffle else np.arange(self.size),
                            **{e: o for e, o in self._orders.items() if e == epoch - 1}}
        return self._orders[epoch]

    @property
    def num_batches(self):
        return max(1, self.size // self.batch_size) if self.shuffle else math.ceil(self.size / self.batch_size)

    def __len__(self):
        return self.num_batches

    def skip_to(self, step):
        """Resumes after `step` batches in all (a mid-epoch checkpoint's optimizer
        step): batch i of this Keras epoch is then batch `step + i` of the run,
        running on into the next pass over the data. Later Keras epochs are
        shifted by the same number of batches; the sequence of batches is the
        uninterrupted run's."""
        self.offset = step - self.epoch * self.num_batches

    def __getitem__(self, index):
        epoch, index = divmod(self.epoch * self.num_batches + self.offset + index, self.num_batches)
        rows = self._order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        return keras.tree.map_structure(lambda a: a[rows], self.arrays)

    def on_epoch_end(self):
        self.epoch += 1


class StepLogger(keras.callbacks.Callback):
    """Every `every` steps: training metrics, learning rate and tokens/s to MLflow
    (keys prefixed `step_`, x-axis the optimizer step); stops at `max_steps`."""

    def __init__(self, every, tokens_per_step, max_steps=None):
        super().__init__()
        self.every, self.tokens_per_step, self.max_steps = every, tokens_per_step, max_steps
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._start is None:
            self._start, self._start_step = time.perf_counter(), self._step()

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step % self.every == 0:
            elapsed = time.perf_counter() - self._start
            metrics = {f"step_{k}": float(v) for k, v in (logs or {}).items()}
            metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            if elapsed > 0:
                metrics["tokens_per_second"] = (step - self._start_step) * self.tokens_per_step / elapsed
            tracking.log_metrics(metrics, step=step)  # kept and sent again if the server does not answer
            self._start = None
        if self.max_steps is not None and step >= self.max_steps:
            self.model.stop_training = True
