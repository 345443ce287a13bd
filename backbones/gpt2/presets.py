"""Built-in GPT-2 presets (data only)."""

from pathlib import Path

PRESETS = {
    "gpt2_tiny_en": {
        "description": "Tiny GPT-2 (2 layers, hidden 64) with RANDOM weights and a small "
                       "BPE vocabulary, bundled for offline demos and tests. Made by "
                       "scripts/make_tiny_presets.py; not a pretrained model.",
        "params": None,
        "handle": str(Path(__file__).parent / "gpt2_tiny_en"),
    },
    "gpt2_base_en": {
        "description": "GPT-2 124M: 12 layers, hidden 768, 12 heads (OpenAI, WebText).",
        "params": 124_439_808,
        "handle": "hf://openai-community/gpt2",
    },
    "gpt2_medium_en": {
        "description": "GPT-2 355M: 24 layers, hidden 1024, 16 heads.",
        "params": 354_823_168,
        "handle": "hf://openai-community/gpt2-medium",
    },
    "gpt2_large_en": {
        "description": "GPT-2 774M: 36 layers, hidden 1280, 20 heads.",
        "params": 774_030_080,
        "handle": "hf://openai-community/gpt2-large",
    },
    "gpt2_extra_large_en": {
        "description": "GPT-2 1.56B: 48 layers, hidden 1600, 25 heads.",
        "params": 1_557_611_200,
        "handle": "hf://openai-community/gpt2-xl",
    },
}
