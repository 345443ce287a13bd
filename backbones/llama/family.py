"""Llama's facts, keras-free (see `registry.Family`). Mistral and Qwen2
checkpoints load as Llama."""

from backbones.common.facts import DECODER_LORA_TARGETS
from backbones.llama.presets import PRESETS
from backbones.registry import Family

FAMILY = Family(
    class_name="LlamaBackbone",
    is_encoder=False,
    lora_targets=DECODER_LORA_TARGETS,
    presets=PRESETS,
    hf_model_types=("llama", "mistral", "qwen2"),
    keras_hub_classes=("LlamaBackbone", "Llama3Backbone"),
    # keras-hub's Llama config has no position limit (rotary positions).
    max_positions={"ours": "max_sequence_length", "transformers": "max_position_embeddings"},
)
