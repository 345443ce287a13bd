"""Facts shared by the families built from `common.decoder` (keras-free)."""

# LoRA target name -> layer names in `GatedDecoderBlock` (Llama, Gemma).
DECODER_LORA_TARGETS = {
    "query": ("query",), "key": ("key",), "value": ("value",),
    "attention_output": ("attention_output",), "ffn": ("ffn_gate", "ffn_intermediate", "ffn_output"),
}
