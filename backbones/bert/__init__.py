"""BERT family: backbone, layers, WordPiece tokenizer, presets, converters.

Its facts and presets (`family.py`) are registered by `import backbones`
without keras; `backbones.load()` imports its Keras modules.
"""


def __getattr__(name):
    # `from backbones.bert import BertBackbone`: the Keras class, imported on first use.
    if name == "BertBackbone":
        import backbones

        backbones.load()
        return backbones.BertBackbone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
