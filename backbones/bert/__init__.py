"""BERT family: backbone, layers, WordPiece tokenizer, presets, transformers converter."""

from backbones.bert import convert_hf, convert_keras_hub  # noqa: F401  (register the converters)
from backbones.bert.backbone import BertBackbone
from backbones.bert.presets import PRESETS
from backbones.registry import register_presets

register_presets(PRESETS, BertBackbone)
