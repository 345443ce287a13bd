"""Gemma's facts, keras-free (see `registry.Family`)."""

from backbones.common.facts import DECODER_LORA_TARGETS
from backbones.gemma.presets import PRESETS
from backbones.registry import Family

FAMILY = Family(
    class_name="GemmaBackbone",
    is_encoder=False,
    lora_targets=DECODER_LORA_TARGETS,
    presets=PRESETS,
    hf_model_types=("gemma",),
    keras_hub_classes=("GemmaBackbone",),
    # keras-hub's Gemma config has no position limit (rotary positions).
    max_positions={"ours": "max_sequence_length", "transformers": "max_position_embeddings"},
)
