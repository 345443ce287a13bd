"""GPT-2 family: backbone, layers, tokenizer, presets, converters.

Its facts and presets (`family.py`) are registered by `import backbones`
without keras; `backbones.load()` imports its Keras modules.
"""


def __getattr__(name):
    # `from backbones.gpt2 import GPT2Backbone`: the Keras class, imported on first use.
    if name == "GPT2Backbone":
        import backbones

        backbones.load()
        return backbones.GPT2Backbone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
