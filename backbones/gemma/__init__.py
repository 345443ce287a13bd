"""Gemma (v1) family: backbone, presets, transformers converter."""

from backbones.gemma import convert_hf  # noqa: F401  (registers the converter)
from backbones.gemma.backbone import GemmaBackbone
from backbones.gemma.presets import PRESETS
from backbones.registry import register_presets

register_presets(PRESETS, GemmaBackbone)
