"""Gemma (v1) family: backbone, presets, transformers converter."""

from backbones.gemma import convert_hf, convert_keras_hub  # noqa: F401  (register the converters)
from backbones.gemma.backbone import GemmaBackbone
from backbones.gemma.presets import PRESETS
from backbones.registry import register_presets

register_presets(PRESETS, GemmaBackbone)
