"""Reading and writing preset directories (keras-hub's layout).

    config.json          {"class_name", "config", "registered_name"}
    model.weights.h5     weights (or model.weights.json + shards when large)
    metadata.json        versions, parameter count, date, sha256 of each weights file
    tokenizer.json       a `tokenizers` tokenizer, plus tokenizer_config.json
    task.json / task.weights.h5   for a task preset

Writes are atomic: everything goes to a sibling directory that is renamed
into place at the end, so a failed save leaves the old preset (or none).
"""

import contextlib
import datetime
import hashlib
import json
import shutil
import uuid
from pathlib import Path

from backbones.errors import PresetChecksumError, PresetFormatError
from backbones.version import __version__

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_FILE = "model.weights.json"
FORMAT_VERSION = 1


def read_json(path, what="preset"):
    """Reads a JSON file, or raises `PresetFormatError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise PresetFormatError(
            f"{path} is missing: {path.parent} is not a complete {what} directory "
            f"(expected config.json, weights and metadata.json)."
        )
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PresetFormatError(f"{path} is not valid JSON ({e}); re-save the {what}.") from e


def write_json(path, data):
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_directory(target):
    """Yields a fresh sibling directory that replaces `target` on success.

    On any exception the sibling is removed and `target` is left untouched.

    Example:
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "preset"
    >>> with atomic_directory(target) as tmp:
    ...     _ = (tmp / "config.json").write_text("{}")
    >>> sorted(p.name for p in target.iterdir())
    ['config.json']
    """
    target = Path(target).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise PresetFormatError(f"Cannot save a preset to {target}: it is a file.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.parent / f".{target.name}.partial-{tag}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old-{tag}"
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def sha256(path, chunk=1 << 22):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_files(directory, stem="model"):
    """The weights files of `stem` in a preset directory (single or sharded)."""
    directory = Path(directory)
    return sorted(
        p.name for p in directory.iterdir()
        if p.name.startswith(stem) and p.name.endswith((".weights.h5", ".weights.json"))
    )


def write_metadata(directory, parameter_count, **extra):
    """Writes metadata.json with the sha256 of every weights file present."""
    import keras

    directory = Path(directory)
    files = [n for stem in ("model", "task") for n in weights_files(directory, stem)]
    write_json(directory / METADATA_FILE, {
        "format_version": FORMAT_VERSION,
        "backbone_lab_version": __version__,
        "keras_version": keras.__version__,
        "parameter_count": int(parameter_count),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sha256": {name: sha256(directory / name) for name in files},
        **extra,
    })


def verify_checksums(directory):
    """Checks every weights file listed in metadata.json against its sha256."""
    directory = Path(directory)
    meta_path = directory / METADATA_FILE
    if not meta_path.exists():
        return  # presets from elsewhere (keras-hub, hand-made) may lack it
    for name, expected in read_json(meta_path).get("sha256", {}).items():
        path = directory / name
        if not path.is_file():
            raise PresetFormatError(
                f"{path} is listed in {meta_path.name} but missing: the preset is "
                "incomplete. Download or save it again."
            )
        if sha256(path) != expected:
            raise PresetChecksumError(
                f"{path} is corrupted: its sha256 does not match {meta_path.name}. "
                "Delete the preset (or its hub cache entry) and download or save it again."
            )


def weights_path(directory, stem="model"):
    """Path to load weights from: the sharded index if present, else the .h5."""
    directory = Path(directory)
    sharded = directory / f"{stem}.weights.json"
    single = directory / f"{stem}.weights.h5"
    if sharded.exists():
        return sharded
    if single.exists():
        return single
    raise PresetFormatError(
        f"{directory} has no {single.name} (or {sharded.name}): the preset has no "
        "weights. Pass load_weights=False for random weights, or re-save the preset."
    )
