"""Reading Hugging Face safetensors checkpoints lazily, tensor by tensor.

The safetensors format is an 8-byte little-endian header length, a JSON
header `{name: {dtype, shape, data_offsets}}`, then raw little-endian data.
`get` reads one tensor with a positioned read into its own page-aligned
buffer, which the Keras variable then adopts (`backbones.variables.fill`):
converting a checkpoint holds each weight once. Not a memory map: its pages
count in the process's resident set as long as it lives (a 5 GB checkpoint
showed as 5 GB more peak RSS), while a read leaves them to the page cache.
Pickled checkpoints (`*.bin`) are never read.
"""

import json
import struct
from pathlib import Path

import numpy as np

from backbones import variables
from backbones.errors import PresetFormatError
# `assign` lives with the reader interface; family converters import it from here too.
from backbones.weight_reader import WeightReader, assign  # noqa: F401

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def _dtype(name):
    if name == "BF16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return _DTYPES[name]


class HFCheckpoint(WeightReader):
    """The tensors of a transformers checkpoint directory, by name (a
    `WeightReader`: `get`, `put`, `check_all_used`).

    Example:
    >>> import tempfile, numpy as np, safetensors.numpy
    >>> d = tempfile.mkdtemp()
    >>> safetensors.numpy.save_file({"w": np.ones((2, 3), "float32")}, f"{d}/model.safetensors")
    >>> HFCheckpoint(d).get("w").shape
    (2, 3)
    """

    item, container = "tensor", "checkpoint"

    def __init__(self, directory):
        self.directory = Path(directory)
        super().__init__(self.directory)
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

    def _read(self, name):
        """The tensor `name` as a NumPy array, in its own buffer."""
        path, dtype, shape, start, end = self._entries[name]
        value = variables.aligned_empty(shape, _dtype(dtype))
        with open(path, "rb", buffering=0) as f:
            f.seek(start)
            read = _read_into(f, memoryview(value.reshape(-1).view(np.uint8)))
        if read != end - start:
            raise PresetFormatError(
                f"{path} is cut short: tensor {name!r} needs bytes {start}-{end} but the file has "
                f"{path.stat().st_size}. The download or copy was interrupted: delete the file "
                "(or its Hugging Face cache folder) and download it again."
            )
        return value


def _incomplete(path, size, what):
    return PresetFormatError(
        f"{path} is incomplete ({size} bytes, too short for {what}): the download or copy "
        "was cut short. Delete it (for an hf:// preset, its snapshot in the Hugging Face "
        "cache) and download or copy it again."
    )


def _read_into(f, buffer):
    """Fills `buffer` from `f`; returns the bytes read (fewer at the end of the file).
    One read() moves at most ~2 GB on Linux, so large tensors take several."""
    done = 0
    while done < len(buffer):
        n = f.readinto(buffer[done:])
        if not n:
            break
        done += n
    return done
