"""Preset formats: one module per on-disk format, and the one place a
directory's format is detected.

    native.py        our presets (keras-hub's layout, our classes); read and written
    transformers.py  transformers checkpoints (config.json with `model_type`, safetensors)
    keras_hub.py     keras-hub presets (`registered_name: "keras_hub>..."`)

Each module registers a `base.PresetReader` subclass under its format name
(`registry.register_format`); the reader says which backbone class the
preset holds, its constructor arguments, builds it with its weights, and
reads its tokenizer. A format that can be written has a `write(backbone,
directory)` function in its module. `Backbone.from_preset` and
`Tokenizer.from_preset` only ask `open_preset(directory)`.

This module is keras-free (the pre-flight check detects formats without
keras); the format modules are imported by `registry.load()`.
"""

from pathlib import Path

from backbones import preset_io, registry

# Format names as preset facts and the pre-flight check show them.
NATIVE, TRANSFORMERS, KERAS_HUB = "ours", "transformers", "keras_hub"
KERAS_HUB_PREFIX = "keras_hub>"


def detect(config):
    """The format of a preset directory, from its parsed config.json: the one
    place the format is decided. `"transformers"` (a checkpoint:
    `model_type`, no `class_name`), `"keras_hub"` (registered name
    `keras_hub>...`) or `"ours"`.

    Example:
    >>> detect({"model_type": "gpt2"}), detect({"class_name": "GPT2Backbone"})
    ('transformers', 'ours')
    >>> detect({"class_name": "GPT2Backbone", "registered_name": "keras_hub>GPT2Backbone"})
    'keras_hub'
    """
    if "class_name" not in config and "model_type" in config:
        return TRANSFORMERS
    if is_keras_hub_config(config):
        return KERAS_HUB
    return NATIVE


def is_keras_hub_config(config):
    """True for a keras-hub serialized config (its `config.json`, `tokenizer.json`).

    Example:
    >>> is_keras_hub_config({"class_name": "GPT2Backbone", "registered_name": "keras_hub>GPT2Backbone"})
    True
    """
    return isinstance(config, dict) and str(config.get("registered_name") or "").startswith(KERAS_HUB_PREFIX)


def model_name(config, fmt):
    """The name a config.json of format `fmt` gives its architecture:
    transformers' `model_type`, else the class name."""
    return config.get("model_type") if fmt == TRANSFORMERS else config.get("class_name")


def family_names(family, fmt):
    """The architecture names `family` converts or is, in format `fmt`."""
    return {TRANSFORMERS: family.hf_model_types, KERAS_HUB: family.keras_hub_classes,
            NATIVE: (family.class_name,)}[fmt]


def family_of(config, fmt):
    """The `registry.Family` of a config.json of format `fmt`, or None when
    no family loads it.

    Example:
    >>> import backbones
    >>> family_of({"model_type": "gpt2"}, "transformers").class_name
    'GPT2Backbone'
    """
    name = model_name(config, fmt)
    return next((f for f in registry.FAMILIES.values() if name in family_names(f, fmt)), None)


def open_preset(directory):
    """The `PresetReader` of a preset directory, in its detected format.

    Use it as a context: it may hold weight files open.

    Example:
    >>> from backbones.handles import resolve_preset
    >>> with open_preset(resolve_preset("gpt2_tiny_en")) as preset:
    ...     preset.name, preset.backbone_class().__name__
    ('ours', 'GPT2Backbone')
    """
    directory = Path(directory)
    config = preset_io.read_json(directory / preset_io.CONFIG_FILE)
    registry.load()  # the format readers, every family's classes and converters
    return registry.PRESET_FORMATS[detect(config)](directory, config)
