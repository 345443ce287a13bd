"""GPT-2's facts, keras-free (see `registry.Family`)."""

from backbones.gpt2.presets import PRESETS
from backbones.registry import Family

FAMILY = Family(
    class_name="GPT2Backbone",
    is_encoder=False,
    lora_targets={
        "query": ("query",), "key": ("key",), "value": ("value",),
        "attention_output": ("attention_output",), "ffn": ("ffn_intermediate", "ffn_output"),
    },
    presets=PRESETS,
    hf_model_types=("gpt2",),
    keras_hub_classes=("GPT2Backbone",),
    max_positions={"ours": "max_sequence_length", "transformers": "n_positions",
                   "keras_hub": "max_sequence_length"},
)
