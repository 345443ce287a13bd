"""Built-in Llama-family presets (data only). Meta's repos are gated: accept
the license on Hugging Face and log in (`hf auth login`) before the first download."""

from pathlib import Path

PRESETS = {
    "llama_tiny_en": {
        "description": "Tiny Llama (2 layers, hidden 64, grouped-query attention, untied "
                       "embeddings) with RANDOM weights and a small SentencePiece-style BPE, "
                       "bundled for offline demos and tests. Made by scripts/make_tiny_presets.py; "
                       "not a pretrained model.",
        "params": None,
        "handle": str(Path(__file__).parent / "llama_tiny_en"),
    },
    "llama2_7b_en": {
        "description": "Llama 2 7B base: 32 layers, hidden 4096, 32 heads, 4k context (Meta, gated).",
        "params": 6_738_415_616,
        "handle": "hf://meta-llama/Llama-2-7b-hf",
    },
    "llama2_instruct_7b_en": {
        "description": "Llama 2 7B chat: Llama 2 7B fine-tuned for dialogue (Meta, gated).",
        "params": 6_738_415_616,
        "handle": "hf://meta-llama/Llama-2-7b-chat-hf",
    },
    "llama3_8b_en": {
        "description": "Llama 3 8B base: 32 layers, hidden 4096, 32 query / 8 key-value heads, "
                       "128k vocabulary, 8k context (Meta, gated).",
        "params": 8_030_261_248,
        "handle": "hf://meta-llama/Meta-Llama-3-8B",
    },
    "llama3_instruct_8b_en": {
        "description": "Llama 3 8B instruct: Llama 3 8B tuned to follow instructions (Meta, gated).",
        "params": 8_030_261_248,
        "handle": "hf://meta-llama/Meta-Llama-3-8B-Instruct",
    },
    "llama3.1_8b": {
        "description": "Llama 3.1 8B base: Llama 3 8B with Llama 3 rope scaling, 128k context (Meta, gated).",
        "params": 8_030_261_248,
        "handle": "hf://meta-llama/Llama-3.1-8B",
    },
    "llama3.1_instruct_8b": {
        "description": "Llama 3.1 8B instruct (Meta, gated).",
        "params": 8_030_261_248,
        "handle": "hf://meta-llama/Llama-3.1-8B-Instruct",
    },
    "llama3.2_1b": {
        "description": "Llama 3.2 1B base: 16 layers, hidden 2048, 32 query / 8 key-value heads, "
                       "tied embeddings, 128k context (Meta, gated).",
        "params": 1_235_814_400,
        "handle": "hf://meta-llama/Llama-3.2-1B",
    },
    "llama3.2_instruct_1b": {
        "description": "Llama 3.2 1B instruct (Meta, gated).",
        "params": 1_235_814_400,
        "handle": "hf://meta-llama/Llama-3.2-1B-Instruct",
    },
    "llama3.2_3b": {
        "description": "Llama 3.2 3B base: 28 layers, hidden 3072, 24 query / 8 key-value heads, "
                       "tied embeddings (Meta, gated).",
        "params": 3_212_749_824,
        "handle": "hf://meta-llama/Llama-3.2-3B",
    },
    "llama3.2_instruct_3b": {
        "description": "Llama 3.2 3B instruct (Meta, gated).",
        "params": 3_212_749_824,
        "handle": "hf://meta-llama/Llama-3.2-3B-Instruct",
    },
    "mistral_7b_en": {
        "description": "Mistral 7B v0.1 base: Llama-style, 8 key-value heads, 4096-token "
                       "sliding window (Mistral AI).",
        "params": 7_241_732_096,
        "handle": "hf://mistralai/Mistral-7B-v0.1",
    },
    "mistral_instruct_7b_en": {
        "description": "Mistral 7B v0.1 instruct (Mistral AI).",
        "params": 7_241_732_096,
        "handle": "hf://mistralai/Mistral-7B-Instruct-v0.1",
    },
    "mistral_0.2_instruct_7b_en": {
        "description": "Mistral 7B v0.2 instruct: no sliding window, rope theta 1e6, 32k context (Mistral AI).",
        "params": 7_241_732_096,
        "handle": "hf://mistralai/Mistral-7B-Instruct-v0.2",
    },
    "qwen2.5_0.5b_en": {
        "description": "Qwen2.5 0.5B base: 24 layers, hidden 896, 14 query / 2 key-value heads, "
                       "query/key/value biases, tied embeddings (Alibaba Qwen).",
        "params": 494_032_768,
        "handle": "hf://Qwen/Qwen2.5-0.5B",
    },
    "qwen2.5_instruct_0.5b_en": {
        "description": "Qwen2.5 0.5B instruct (Alibaba Qwen).",
        "params": 494_032_768,
        "handle": "hf://Qwen/Qwen2.5-0.5B-Instruct",
    },
    "qwen2.5_1.5b_en": {
        "description": "Qwen2.5 1.5B base: 28 layers, hidden 1536, 12 query / 2 key-value heads (Alibaba Qwen).",
        "params": 1_543_714_304,
        "handle": "hf://Qwen/Qwen2.5-1.5B",
    },
}
