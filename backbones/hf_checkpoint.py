"""Reading Hugging Face safetensors checkpoints lazily, tensor by tensor.

The safetensors format is an 8-byte little-endian header length, a JSON
header `{name: {dtype, shape, data_offsets}}`, then raw little-endian data.
Each file is memory-mapped; `get` copies out one tensor, so converting a
sharded checkpoint never holds a second copy of the model in memory.
Pickled checkpoints (`*.bin`) are never read.
"""

import json
import struct
from pathlib import Path

import numpy as np

from backbones.errors import ConversionError, PresetFormatError

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _dtype(name):
    if name == "BF16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return _DTYPES[name]


class HFCheckpoint:
    """The tensors of a transformers checkpoint directory, by name.

    Tracks which tensors were read, so a converter can check that none is left
    over (`check_all_used`).

    Example:
    >>> import tempfile, numpy as np, safetensors.numpy
    >>> d = tempfile.mkdtemp()
    >>> safetensors.numpy.save_file({"w": np.ones((2, 3), "float32")}, f"{d}/model.safetensors")
    >>> HFCheckpoint(d).get("w").shape
    (2, 3)
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        index = self.directory / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.directory.glob("*.safetensors"))
        if not files:
            raise PresetFormatError(
                f"{self.directory} has no *.safetensors weights. Pickled checkpoints "
                "(pytorch_model.bin) are never loaded: re-save the model with "
                "transformers' save_pretrained(..., safe_serialization=True)."
            )
        self._entries = {}  # name -> (file, dtype, shape, start, end)
        for name in files:
            self._read_header(self.directory / name)
        self._maps = {}
        self.used = set()

    def _read_header(self, path):
        if not path.is_file():
            raise PresetFormatError(f"{path} is listed in the shard index but missing.")
        size = path.stat().st_size
        try:
            with open(path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length)) if 8 + length <= size else None
        except (struct.error, ValueError):
            header = None
        if header is None:
            raise _incomplete(path, size, "its header")
        base = 8 + length
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            if base + end > size:
                raise _incomplete(path, size, f"tensor {name!r}, which ends at byte {base + end}")
            self._entries[name] = (path, info["dtype"], tuple(info["shape"]), base + start, base + end)

    def keys(self):
        return set(self._entries)

    def __contains__(self, name):
        return name in self._entries

    def shape(self, name):
        return self._entries[name][2]

    def get(self, name):
        """The tensor `name` as a NumPy array (a copy), marked as used."""
        if name not in self._entries:
            raise ConversionError(
                f"Tensor {name!r} is missing from the checkpoint in {self.directory}: "
                "the checkpoint does not match its config.json."
            )
        path, dtype, shape, start, end = self._entries[name]
        if path not in self._maps:
            self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r")
        raw = self._maps[path][start:end]
        self.used.add(name)
        return np.array(raw.view(_dtype(dtype)).reshape(shape))

    def check_all_used(self, ignore=()):
        """Raises if a tensor was never read (except names ending in `ignore`)."""
        left = sorted(n for n in self.keys() - self.used if not n.endswith(tuple(ignore)))
        if left:
            raise ConversionError(
                f"The checkpoint in {self.directory} has {len(left)} unexpected tensor(s) "
                f"that the architecture has no place for, e.g. {left[:5]}. Its config.json "
                "probably describes another architecture."
            )


def _incomplete(path, size, what):
    return PresetFormatError(
        f"{path} is incomplete ({size} bytes, too short for {what}): the download or copy "
        "was cut short. Delete it (for an hf:// preset, its snapshot in the Hugging Face "
        "cache) and download or copy it again."
    )


def assign(variable, value, name):
    """Assigns a checkpoint tensor to a Keras variable, checking the shape."""
    if tuple(variable.shape) != tuple(value.shape):
        raise ConversionError(
            f"Checkpoint tensor {name!r} has shape {tuple(value.shape)}, but "
            f"{variable.path} expects {tuple(variable.shape)}: the checkpoint does not "
            "match its config.json."
        )
    if value.dtype.name in ("bfloat16", "float16", "float64"):
        value = value.astype(np.float32)  # Keras casts float32 to the variable's dtype
    variable.assign(value)
