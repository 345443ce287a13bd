"""Built-in BERT presets (data only).

Parameter counts are those of the architecture (embeddings, encoder and
pooler), as `count_params()` gives them. The `google/bert_uncased_L-*`
repositories (Google's compact BERTs, "Well-Read Students Learn Better",
2019) date from before safetensors; whether they ship `*.safetensors` on main
was not verifiable here, and we never load `pytorch_model.bin`.
"""

from pathlib import Path

_COMPACT_NOTE = (" If the repository has no *.safetensors, loading stops with a clear error "
                 "(pickled pytorch_model.bin is never loaded).")

PRESETS = {
    "bert_tiny_random_en": {
        "description": "Tiny BERT (2 layers, hidden 64, 2 heads) with RANDOM weights and a "
                       "512-token lowercase WordPiece vocabulary, bundled for offline demos "
                       "and tests. Made by scripts/make_tiny_presets.py; not a pretrained model.",
        "params": None,
        "handle": str(Path(__file__).parent / "bert_tiny_random_en"),
    },
    "bert_tiny_en_uncased": {
        "description": "BERT-Tiny: 2 layers, hidden 128, 2 heads, lowercase English (Google)." + _COMPACT_NOTE,
        "params": 4_385_920,
        "handle": "hf://google/bert_uncased_L-2_H-128_A-2",
    },
    "bert_small_en_uncased": {
        "description": "BERT-Small: 4 layers, hidden 512, 8 heads, lowercase English (Google)." + _COMPACT_NOTE,
        "params": 28_763_648,
        "handle": "hf://google/bert_uncased_L-4_H-512_A-8",
    },
    "bert_medium_en_uncased": {
        "description": "BERT-Medium: 8 layers, hidden 512, 8 heads, lowercase English (Google)." + _COMPACT_NOTE,
        "params": 41_373_184,
        "handle": "hf://google/bert_uncased_L-8_H-512_A-8",
    },
    "bert_base_en_uncased": {
        "description": "BERT-Base: 12 layers, hidden 768, 12 heads, lowercase English "
                       "(Wikipedia + BooksCorpus).",
        "params": 109_482_240,
        "handle": "hf://google-bert/bert-base-uncased",
    },
    "bert_base_en": {
        "description": "BERT-Base: 12 layers, hidden 768, 12 heads, cased English "
                       "(Wikipedia + BooksCorpus).",
        "params": 108_310_272,
        "handle": "hf://google-bert/bert-base-cased",
    },
    "bert_large_en_uncased": {
        "description": "BERT-Large: 24 layers, hidden 1024, 16 heads, lowercase English "
                       "(Wikipedia + BooksCorpus).",
        "params": 335_141_888,
        "handle": "hf://google-bert/bert-large-uncased",
    },
    "bert_large_en": {
        "description": "BERT-Large: 24 layers, hidden 1024, 16 heads, cased English "
                       "(Wikipedia + BooksCorpus).",
        "params": 333_579_264,
        "handle": "hf://google-bert/bert-large-cased",
    },
    "bert_base_multi": {
        "description": "Multilingual BERT-Base: 12 layers, hidden 768, 12 heads, cased, "
                       "104 languages (Wikipedia).",
        "params": 177_853_440,
        "handle": "hf://google-bert/bert-base-multilingual-cased",
    },
}
