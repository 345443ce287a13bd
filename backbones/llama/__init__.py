"""Llama family (Llama 2 / 3, plus Mistral and Qwen2 checkpoints): backbone, presets, converters.

Its facts and presets (`family.py`) are registered by `import backbones`
without keras; `backbones.load()` imports its Keras modules.
"""


def __getattr__(name):
    # `from backbones.llama import LlamaBackbone`: the Keras class, imported on first use.
    if name == "LlamaBackbone":
        import backbones

        backbones.load()
        return backbones.LlamaBackbone
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
