"""Gemma (v1) family: backbone, presets, converters.

Its facts and presets (`family.py`) are registered by `import backbones`
without keras; `backbones.load()` imports its Keras modules.
"""


def __getattr__(name):
    # `from backbones.gemma import GemmaBackbone`: the Keras class, imported on first use.
    if name == "GemmaBackbone":
        import backbones

        backbones.load()
        return backbones.GemmaBackbone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
