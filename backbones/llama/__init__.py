"""Llama family (Llama 2 / 3, plus Mistral and Qwen2 checkpoints): backbone, presets, converters.

Its facts and presets (`family.py`) are registered by `import backbones`
without keras; `backbones.load()` imports its Keras modules.
"""

from backbones.registry import lazy_classes

__getattr__ = lazy_classes(__name__, "LlamaBackbone")
