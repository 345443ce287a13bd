"""Our own presets: keras-hub's directory layout holding our registered classes.

Read: `config.json` names the class and its constructor arguments;
`model.weights.h5` (or sharded) holds Keras 3 weights, checked against the
sha256 in `metadata.json`; `tokenizer.json` + `tokenizer_config.json`.
Written by `write` (`Backbone.save_to_preset`).
"""

import concurrent.futures

from backbones import formats, preset_io, registry, weights_h5
from backbones.errors import PresetFormatError, QuantizationError
from backbones.formats.base import PresetReader, built_to_be_filled, quantize_on_load
from backbones.initializers import weights_to_be_loaded
from backbones.tokenizer import Tokenizer


@registry.register_format(formats.NATIVE)
class NativePreset(PresetReader):
    """A preset saved by `save_to_preset` (see `backbones.formats.base.PresetReader`)."""

    name = formats.NATIVE

    def backbone_class(self):
        name = self.config.get("class_name")
        if name not in registry.BACKBONE_CLASSES:
            raise PresetFormatError(
                f"{self.directory}/config.json names class {name!r}, which is not a backbone "
                f"this package registers ({sorted(registry.BACKBONE_CLASSES)}). Only our "
                "registered classes are built from presets."
            )
        return registry.BACKBONE_CLASSES[name]

    def backbone_kwargs(self, load_weights=True):
        return dict(self.config.get("config", {}))

    def build(self, target, kwargs):
        # The sha256 of the weights runs on another thread (hashlib and file
        # reads release the GIL) while the model is built and loaded; a
        # mismatch still raises before anything is returned.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            checked = pool.submit(preset_io.verify_checksums, self.directory)
            try:
                # The large weights are created from their stored arrays
                # as the model is built, the rest assigned after (weights_h5).
                with weights_h5.StoredWeights(preset_io.weights_path(self.directory)) as stored:
                    if quantize_on_load():  # filled one by one, each layer quantized when filled
                        with built_to_be_filled(lambda: target.from_config(kwargs)) as backbone:
                            stored.load_into(backbone)
                    else:
                        with weights_to_be_loaded(stored):
                            backbone = target.from_config(kwargs)
                        stored.load_into(backbone)
            except Exception:
                checked.result()  # a corrupted file reports its checksum, not the h5 error
                raise
            checked.result()
        return backbone

    def tokenizer(self):
        return Tokenizer.from_directory(self.directory)


def write(backbone, directory, max_shard_size=5.0):
    """Writes `backbone`'s config, weights and tokenizer into the existing
    `directory` (`Backbone.save_to_preset` makes it atomic and adds metadata)."""
    if backbone.quantized:
        # A preset of int8 kernels would load into float layers as garbage, and
        # dequantizing would bake the quantization error into a "full" model.
        raise QuantizationError(
            f"This {type(backbone).__name__} is quantized (int8): it cannot be saved as a preset. "
            "Save the adapter with save_lora_weights(path); to get a merged preset, load "
            "the unquantized base (Backbone.from_preset(preset)), load_lora_weights(path) "
            "into it and call save_to_preset there.")
    name = type(backbone).__name__
    preset_io.write_json(directory / preset_io.CONFIG_FILE, {
        "module": type(backbone).__module__, "class_name": name,
        "config": backbone.get_config(), "registered_name": f"backbone_lab>{name}",
    })
    weight_bytes = sum(w.numpy().nbytes for w in backbone.weights)
    if weight_bytes > max_shard_size * 1e9:
        backbone.save_weights(directory / preset_io.SHARDED_WEIGHTS_FILE, max_shard_size=max_shard_size)
    else:
        backbone.save_weights(directory / preset_io.WEIGHTS_FILE)
    if backbone.tokenizer is not None:
        backbone.tokenizer.save_to_preset(directory)
