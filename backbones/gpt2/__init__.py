"""GPT-2 family: backbone, layers, tokenizer, presets, transformers converter."""

from backbones.gpt2 import convert_hf, convert_keras_hub  # noqa: F401  (register the converters)
from backbones.gpt2.backbone import GPT2Backbone
from backbones.gpt2.presets import PRESETS
from backbones.registry import register_presets

register_presets(PRESETS, GPT2Backbone)
