"""GPT-2 family: backbone, layers, tokenizer, presets, transformers converter."""

from backbones.gpt2 import convert_hf  # noqa: F401  (registers the converter)
from backbones.gpt2.backbone import GPT2Backbone
from backbones.gpt2.presets import PRESETS
from backbones.registry import register_presets

register_presets(PRESETS, GPT2Backbone)
