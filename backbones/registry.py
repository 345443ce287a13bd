"""Registries that families fill: family facts, backbone classes, built-in presets, converters.

Nothing here imports a family or keras. `import backbones` registers every
family's facts and presets (its keras-free `family.py`); `backbones.load()`
imports the families' Keras modules, which register their classes and
converters. Adding a family never edits this file or a central if/elif.
"""

import dataclasses
import difflib

# class name -> `Family`: what is known of a family without building it
# (the pre-flight check and the loaders read it; the backbone class uses it).
FAMILIES = {}

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


@dataclasses.dataclass(frozen=True)
class Family:
    """The facts of a backbone family, keras-free (`backbones/<family>/family.py`).

    Args:
        class_name: str. Our backbone class (`"GPT2Backbone"`).
        is_encoder: bool. A bidirectional encoder (no causal LM on it).
        lora_targets: dict. LoRA target name -> names of the layers it covers;
            the backbone class's `lora_target_layers`.
        presets: dict. Built-in presets: name -> {description, params, handle}.
        hf_model_types: tuple. transformers `model_type`s it converts.
        keras_hub_classes: tuple. keras-hub backbone classes it converts.
        max_positions: dict. Per preset format (`"ours"`, `"transformers"`,
            `"keras_hub"`), the config.json key holding the number of positions
            the model was built or trained for (absent: no such key).
        modules: tuple. The family's Keras modules that `backbones.load()`
            imports (they register the class and converters).
    """

    class_name: str
    is_encoder: bool
    lora_targets: dict
    presets: dict = dataclasses.field(repr=False)
    hf_model_types: tuple = ()
    keras_hub_classes: tuple = ()
    max_positions: dict = dataclasses.field(default_factory=dict)
    modules: tuple = ("backbone", "convert_hf", "convert_keras_hub")
    package: str = ""  # set by register_family


def register_family(family, package):
    """Registers a family's facts and presets; `package` holds its modules."""
    if family.class_name in FAMILIES:
        raise ValueError(f"Backbone family {family.class_name!r} is registered twice.")
    FAMILIES[family.class_name] = dataclasses.replace(family, package=package)
    register_presets(family.presets, family.class_name)


def family_of(config, fmt):
    """The `Family` of a preset's config.json in format `fmt` (see
    `preset_io.config_format`), or None when no family converts it.

    Example:
    >>> import backbones
    >>> family_of({"model_type": "gpt2"}, "transformers").class_name
    'GPT2Backbone'
    """
    for family in FAMILIES.values():
        if ((fmt == "ours" and config.get("class_name") == family.class_name)
                or (fmt == "transformers" and config.get("model_type") in family.hf_model_types)
                or (fmt == "keras_hub" and config.get("class_name") in family.keras_hub_classes)):
            return family
    return None


def register_presets(presets, class_name):
    """Adds a family's built-in presets, tagging each with its class name."""
    for name, meta in presets.items():
        if name in BACKBONE_PRESETS:
            raise ValueError(f"Preset name {name!r} is registered twice.")
        BACKBONE_PRESETS[name] = {**meta, "class_name": class_name}


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


def lazy_classes(module_name, *class_names):
    """A family package's module `__getattr__`: `from backbones.gpt2 import
    GPT2Backbone` imports the Keras side (`backbones.load()`) on first use,
    so that importing the package itself stays keras-free.

    Example:
    >>> getter = lazy_classes("backbones.gpt2", "GPT2Backbone")
    >>> getter("GPT2Backbone").__name__
    'GPT2Backbone'
    """

    def __getattr__(name):
        if name in class_names:
            import backbones

            backbones.load()
            return getattr(backbones, name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__
