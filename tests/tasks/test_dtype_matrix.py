"""Every dtype trains (issue 10, item 1): a few steps on one repeated batch,
the loss finite and lower at the end than at the start.

The full cross product (5 dtypes x 4 optimizers x 2 tasks x LoRA or not x
4 families) is 320 runs; this covers every factor and every pair of factors
that can break in 45 runs of 1-2 s (no XLA: its compile time would
dominate; the GPT-2 classifier cells, every dtype and optimizer among them,
run the traced train step as `train.py debug=fast` does, the other cells
run eagerly, the same ops at half the cost):
- one family (GPT-2): every dtype x {LoRA, full} x {classifier, causal LM},
  the optimizer rotating so every dtype meets every optimizer, and every
  optimizer meets LoRA and full training and both tasks;
- every family x every dtype on one config (LoRA classifier; decoders also
  a full causal LM), the optimizer rotating again.
Optimizers are built as train.py builds them (`lab.training.build_optimizer`
from an `optimizer` config node), and `"auto"` is `compile()`'s default.
"""

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

import backbones
import tasks
from backbones.registry import BACKBONE_CLASSES, BACKBONE_PRESETS
from lab.training import build_optimizer
from tests.helpers import bundled_presets
from tests.tasks.toy_data import corpus, sentiment

DTYPES = ["float32", "bfloat16", "float16", "mixed_bfloat16", "mixed_float16"]
STEPS = 5
# train.py's optimizer options; learning rates high enough to see the loss move in a few steps
# (LoRA's; a full fine-tune takes a tenth).
OPTIMIZERS = {
    "adamw_clip_decay_linear": dict(name="adamw", learning_rate=1e-2, weight_decay=0.01, schedule="linear",
                                    warmup_ratio=0.2, clipnorm=1.0),
    "sgd_cosine_decay": dict(name="sgd", learning_rate=0.1, weight_decay=1e-4, schedule="cosine",
                             warmup_ratio=0.0, clipnorm=1.0),
    "adam_noclip_constant": dict(name="adam", learning_rate=1e-2, weight_decay=0.0, schedule="constant",
                                 warmup_ratio=0.0, clipnorm=None),
    "auto": None,  # compile()'s default AdamW, learning rate raised after compile
}
OPTIMIZER_NAMES = list(OPTIMIZERS)


def train_steps(preset, dtype, task, lora, optimizer, eager):
    """Per-step losses of `STEPS` steps on one repeated batch of 8 (dropout
    off, so the loss moves only by training)."""
    backbone = backbones.Backbone.from_preset(preset, dtype=dtype, dropout=0.0)
    if task == "classifier":
        model = tasks.TextClassifier(backbone, num_classes=3, sequence_length=12, dropout=0.0)
        texts, labels = sentiment(8)
        data = (texts, np.array(labels))
    else:
        model = tasks.CausalLM(backbone, sequence_length=12)
        data = (corpus(8),)
    if lora:
        backbone.enable_lora(4)
    scale = 1.0 if lora else 0.1
    if OPTIMIZERS[optimizer] is None:
        model.compile(jit_compile=False, run_eagerly=eager)
        model.optimizer.learning_rate = 1e-2 * scale
    else:
        cfg = OmegaConf.create(OPTIMIZERS[optimizer])
        cfg.learning_rate *= scale
        model.compile(optimizer=build_optimizer(cfg, total_steps=STEPS), jit_compile=False, run_eagerly=eager)
    history = model.fit(*data, batch_size=8, epochs=STEPS, shuffle=False, verbose=0)
    return history.history["loss"]


def check(losses, cell):
    assert np.all(np.isfinite(losses)), f"{cell}: non-finite loss {losses}"
    assert losses[-1] < losses[0], f"{cell}: loss did not go down {losses}"


GPT2_CELLS = [(dtype, task, lora, OPTIMIZER_NAMES[(d + 2 * t + l) % len(OPTIMIZERS)])
              for d, dtype in enumerate(DTYPES)
              for t, task in enumerate(("classifier", "causal_lm"))
              for l, lora in enumerate((True, False))]


@pytest.mark.parametrize("dtype,task,lora,optimizer", GPT2_CELLS)
def test_every_dtype_task_lora_optimizer_on_gpt2(dtype, task, lora, optimizer):
    losses = train_steps("gpt2_tiny_en", dtype, task, lora, optimizer, eager=task != "classifier")
    check(losses, (dtype, task, lora, optimizer))


def is_encoder(preset):
    return BACKBONE_CLASSES[BACKBONE_PRESETS[preset]["class_name"]].is_encoder


def family_configs(preset, d):
    """Decoders: a LoRA classifier and a full causal LM; encoders (no causal
    LM): a classifier, LoRA or full by turns."""
    return [("classifier", d % 2 == 0)] if is_encoder(preset) else [("classifier", True), ("causal_lm", False)]


FAMILY_CELLS = [(preset, dtype, task, lora, OPTIMIZER_NAMES[(p + d) % len(OPTIMIZERS)])
                for p, preset in enumerate(bundled_presets()) if preset != "gpt2_tiny_en"
                for d, dtype in enumerate(DTYPES)
                for task, lora in family_configs(preset, d)]


@pytest.mark.parametrize("preset,dtype,task,lora,optimizer", FAMILY_CELLS)
def test_every_family_in_every_dtype(preset, dtype, task, lora, optimizer):
    check(train_steps(preset, dtype, task, lora, optimizer, eager=True), (preset, dtype, task, lora, optimizer))


def test_the_matrix_covers_every_pair():
    cells = [("gpt2_tiny_en",) + c for c in GPT2_CELLS] + FAMILY_CELLS
    names = ("preset", "dtype", "task", "lora", "optimizer")
    values = [set(v) for v in zip(*cells)]
    assert values[0] == set(bundled_presets()) and values[1] == set(DTYPES) and values[4] == set(OPTIMIZERS)
    impossible = {(p, "causal_lm") for p in values[0] if is_encoder(p)}
    for i in range(5):
        for j in range(i + 1, 5):
            seen = {(c[i], c[j]) for c in cells}
            missing = {(a, b) for a in values[i] for b in values[j]} - seen - impossible
            assert not missing, (names[i], names[j], sorted(missing))
