"""Registries that families and formats fill: family facts, backbone classes,
built-in presets, converters, preset formats.

Nothing here imports a family, a format or keras: this is the bottom of the
package. `import backbones` registers every family's facts and presets (its
keras-free `family.py`); `load()` imports the preset formats' and the
families' Keras modules by name, which register their readers, classes and
converters. Adding a family or a format never edits this file or a central
if/elif. Every registry refuses a name registered twice, naming both
registrants: import order never decides which implementation wins.
"""

import dataclasses
import difflib
import importlib
import os
import pkgutil

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

# preset format name (`backbones.formats.detect`) -> its reader class
# (`backbones.formats.base.PresetReader`), registered by its module in
# `backbones/formats/`.
PRESET_FORMATS = {}


class DuplicateRegistrationError(ValueError):
    """A name registered twice in one registry (a programming error, not a user's)."""


def _describe(obj):
    if isinstance(obj, Family):
        return f"the family in {obj.package or '?'}"
    if isinstance(obj, dict) and "class_name" in obj:
        return f"a preset of {obj['class_name']}"
    module = getattr(obj, "__module__", None)
    return f"{module}.{getattr(obj, '__qualname__', obj)}" if module else repr(obj)


def _same_definition(old, new):
    # The same class statement run again (a module reloaded) is not a second registrant.
    return (isinstance(old, type) and isinstance(new, type)
            and (old.__module__, old.__qualname__) == (new.__module__, new.__qualname__))


def register(table, name, obj, what):
    """Puts `obj` in `table` under `name`, refusing a name already taken.

    Example:
    >>> table = {}
    >>> register(table, "gpt2", dict, "Hugging Face converter")
    >>> register(table, "gpt2", list, "Hugging Face converter")
    Traceback (most recent call last):
    ...
    backbones.registry.DuplicateRegistrationError: Hugging Face converter 'gpt2' is registered twice: by builtins.dict and by builtins.list. Rename one, or remove the duplicate registration.
    """
    old = table.get(name)
    if old is not None and old is not obj and not _same_definition(old, obj):
        raise DuplicateRegistrationError(
            f"{what} {name!r} is registered twice: by {_describe(old)} and by {_describe(obj)}. "
            "Rename one, or remove the duplicate registration.")
    table[name] = obj


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
    family = dataclasses.replace(family, package=package)
    if family.class_name in FAMILIES and FAMILIES[family.class_name] == family:
        return  # the same family.py imported again
    register(FAMILIES, family.class_name, family, "Backbone family")
    register_presets(family.presets, family.class_name)


def register_presets(presets, class_name):
    """Adds a family's built-in presets, tagging each with its class name."""
    for name, meta in presets.items():
        meta = {**meta, "class_name": class_name}
        if BACKBONE_PRESETS.get(name) != meta:
            register(BACKBONE_PRESETS, name, meta, "Preset name")


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
        register(HF_CONVERTERS, model_type, converter, "Hugging Face converter for model_type")
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
        register(KERAS_HUB_CONVERTERS, class_name, converter, "keras-hub converter for class")
        return converter

    return wrap


def register_backbone_class(cls):
    """Registers a backbone class by its name (`Backbone.__init_subclass__`)."""
    register(BACKBONE_CLASSES, cls.__name__, cls, "Backbone class")


def register_format(name):
    """Decorator: registers the reader class of preset format `name`
    (see `backbones.formats`)."""

    def wrap(reader):
        register(PRESET_FORMATS, name, reader, "Preset format")
        return reader

    return wrap


_loaded = False


def load():
    """Imports the Keras side by name: every preset format's module
    (`backbones/formats/*.py`) and every family's modules, which register
    their readers, classes and converters. Idempotent.

    By name, like plug-ins: this module sits below all of them and imports none.

    Example:
    >>> load()
    >>> "GPT2Backbone" in BACKBONE_CLASSES and "transformers" in PRESET_FORMATS
    True
    """
    global _loaded
    if _loaded:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # fewer TensorFlow C++ info logs
    formats = importlib.import_module("backbones.formats")
    for module in pkgutil.iter_modules(formats.__path__):
        importlib.import_module(f"backbones.formats.{module.name}")
    for family in FAMILIES.values():
        for module in family.modules:
            importlib.import_module(f"{family.package}.{module}")
    _loaded = True


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
            load()
            return BACKBONE_CLASSES[name]
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__
