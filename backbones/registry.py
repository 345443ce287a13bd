"""Registries that families fill: backbone classes, built-in presets, converters.

Nothing here imports a family. Families register themselves when
`backbones` is imported (it imports every family sub-package), so adding a
family never edits this file or a central if/elif.
"""

import difflib

# class name -> class. Filled by `Backbone.__init_subclass__`: only classes of
# our package can ever be built from a preset's config.json.
BACKBONE_CLASSES = {}

# preset name -> metadata dict (class_name, description, params, handle).
BACKBONE_PRESETS = {}

# Hugging Face `model_type` -> converter module/object with
# `convert_config(hf_config) -> (class_name, kwargs)` and
# `convert_weights(backbone, reader, hf_config)`.
HF_CONVERTERS = {}

# keras-hub backbone class name (`GPT2Backbone`) -> converter with
# `backbone_class`, `convert_config(keras_hub_config) -> kwargs`,
# `convert_weights(backbone, reader, keras_hub_config)` and optionally
# `config_from_weights(reader) -> kwargs` and
# `convert_tokenizer(directory) -> Tokenizer or None`.
KERAS_HUB_CONVERTERS = {}


def register_presets(presets, backbone_class):
    """Adds a family's built-in presets, tagging each with its class name."""
    for name, meta in presets.items():
        if name in BACKBONE_PRESETS:
            raise ValueError(f"Preset name {name!r} is registered twice.")
        BACKBONE_PRESETS[name] = {**meta, "class_name": backbone_class.__name__}


def register_converter(model_type):
    """Decorator: registers a Hugging Face converter for `model_type`.

    Example:
    >>> @register_converter("my_model_type")
    ... class MyConverter:
    ...     pass
    >>> HF_CONVERTERS.pop("my_model_type").__name__
    'MyConverter'
    """

    def wrap(converter):
        HF_CONVERTERS[model_type] = converter
        return converter

    return wrap


def register_keras_hub_converter(class_name):
    """Decorator: registers a keras-hub preset converter for `class_name`.

    Example:
    >>> @register_keras_hub_converter("MyBackbone")
    ... class MyKerasHubConverter:
    ...     pass
    >>> KERAS_HUB_CONVERTERS.pop("MyBackbone").__name__
    'MyKerasHubConverter'
    """

    def wrap(converter):
        KERAS_HUB_CONVERTERS[class_name] = converter
        return converter

    return wrap


def closest(name, candidates, n=3):
    """The closest candidate names to `name`, best first (for error hints)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def preset_class(preset):
    """The backbone class of a built-in preset name, or None for other handles
    (known only after resolving them)."""
    meta = BACKBONE_PRESETS.get(str(preset))
    return BACKBONE_CLASSES.get(meta["class_name"]) if meta else None
