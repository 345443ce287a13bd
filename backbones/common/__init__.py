"""Layers shared by the rotary decoder families (Llama, Gemma): RMS norm,
rotary positions, grouped-query attention with a key/value cache, the
pre-norm gated decoder block, and a SentencePiece-style BPE trainer."""
