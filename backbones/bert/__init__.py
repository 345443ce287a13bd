"""BERT family: backbone, layers, WordPiece tokenizer, presets, transformers converter."""

from backbones.bert import convert_hf  # noqa: F401  (registers the converter)
from backbones.bert.backbone import BertBackbone
from backbones.bert.presets import PRESETS
from backbones.registry import register_presets

register_presets(PRESETS, BertBackbone)
