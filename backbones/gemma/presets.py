"""Built-in Gemma presets (data only). Google's repos are gated: accept the
license on Hugging Face and log in (`hf auth login`) before the first download."""

from pathlib import Path

PRESETS = {
    "gemma_tiny_en": {
        "description": "Tiny Gemma (2 layers, hidden 64, multi-query attention, head_dim 32) "
                       "with RANDOM weights and a small SentencePiece-style BPE, bundled for "
                       "offline demos and tests. Made by scripts/make_tiny_presets.py; not a "
                       "pretrained model.",
        "params": None,
        "handle": str(Path(__file__).parent / "gemma_tiny_en"),
    },
    "gemma_2b_en": {
        "description": "Gemma 2B base: 18 layers, hidden 2048, 8 query heads sharing 1 key-value "
                       "head, head_dim 256, 256k vocabulary (Google, gated).",
        "params": 2_506_172_416,
        "handle": "hf://google/gemma-2b",
    },
    "gemma_instruct_2b_en": {
        "description": "Gemma 2B instruct: Gemma 2B tuned to follow instructions (Google, gated).",
        "params": 2_506_172_416,
        "handle": "hf://google/gemma-2b-it",
    },
    "gemma_1.1_instruct_2b_en": {
        "description": "Gemma 1.1 2B instruct: an improved instruction tuning of Gemma 2B (Google, gated).",
        "params": 2_506_172_416,
        "handle": "hf://google/gemma-1.1-2b-it",
    },
    "gemma_7b_en": {
        "description": "Gemma 7B base: 28 layers, hidden 3072, 16 heads, head_dim 256 (Google, gated).",
        "params": 8_537_680_896,
        "handle": "hf://google/gemma-7b",
    },
    "gemma_instruct_7b_en": {
        "description": "Gemma 7B instruct (Google, gated).",
        "params": 8_537_680_896,
        "handle": "hf://google/gemma-7b-it",
    },
    "gemma_1.1_instruct_7b_en": {
        "description": "Gemma 1.1 7B instruct (Google, gated).",
        "params": 8_537_680_896,
        "handle": "hf://google/gemma-1.1-7b-it",
    },
}
