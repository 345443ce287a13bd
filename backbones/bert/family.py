"""BERT's facts, keras-free (see `registry.Family`)."""

from backbones.bert.presets import PRESETS
from backbones.registry import Family

FAMILY = Family(
    class_name="BertBackbone",
    is_encoder=True,
    lora_targets={
        "query": ("query",), "key": ("key",), "value": ("value",),
        "attention_output": ("attention_output",), "ffn": ("ffn_intermediate", "ffn_output"),
    },
    presets=PRESETS,
    hf_model_types=("bert",),
    keras_hub_classes=("BertBackbone",),
    max_positions={"ours": "max_sequence_length", "transformers": "max_position_embeddings",
                   "keras_hub": "max_sequence_length"},
)
