"""Llama family (Llama 2 / 3, plus Mistral and Qwen2 checkpoints): backbone, presets, converters."""

from backbones.llama import convert_hf, convert_keras_hub  # noqa: F401  (register the converters)
from backbones.llama.backbone import LlamaBackbone
from backbones.llama.presets import PRESETS
from backbones.registry import register_presets

register_presets(PRESETS, LlamaBackbone)
