"""Resolving a preset handle to a local directory.

A preset is one of: a built-in name (`gpt2_base_en`), `hf://owner/repo[@revision]`,
`kaggle://owner/model/framework/variant[/version]`, or a local directory.
Downloads go through `huggingface_hub` / `kagglehub` and their caches, so a
cached preset resolves offline. Each failure is one `BackboneLabError` with a
message that says what to do.
"""

import json
import logging
import os
from pathlib import Path

from backbones import registry
from backbones.errors import PresetDownloadError, PresetNotFoundError

log = logging.getLogger(__name__)

# Only what a preset can need: our own layout, or a transformers checkpoint.
# Never pickled checkpoints (`*.bin`, `*.pt`): we do not unpickle.
OUR_FILES = ["config.json", "metadata.json", "*.weights.h5", "*.weights.json",
             "tokenizer.json", "tokenizer_config.json", "task.json", "assets/*"]
HF_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json",
            "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
            "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model",
            "generation_config.json"]


def resolve_preset(preset):
    """Returns the local directory of `preset`, downloading it if needed.

    Example:
    >>> import backbones
    >>> resolve_preset("gpt2_tiny_en").name
    'gpt2_tiny_en'
    """
    preset = os.fspath(preset)
    if preset in registry.BACKBONE_PRESETS:
        return resolve_preset(registry.BACKBONE_PRESETS[preset]["handle"])
    if preset.startswith("hf://"):
        return _from_hf(preset[len("hf://"):])
    if preset.startswith("kaggle://"):
        return _from_kaggle(preset[len("kaggle://"):])
    return _local_directory(preset)


def locate_preset(preset):
    """The local directory of `preset` without downloading anything, or None
    for a hub handle that is not cached yet (loading it will download it).

    Raises as `resolve_preset` does for an unknown name or a missing
    directory, and for an uncached Hugging Face handle when offline
    (`HF_HUB_OFFLINE=1`). Keras-free; the pre-flight check uses it.

    Example:
    >>> locate_preset("gpt2_tiny_en").name
    'gpt2_tiny_en'
    """
    preset = os.fspath(preset)
    if preset in registry.BACKBONE_PRESETS:
        return locate_preset(registry.BACKBONE_PRESETS[preset]["handle"])
    if preset.startswith("hf://"):
        return _cached_hf(preset[len("hf://"):])
    if preset.startswith("kaggle://"):
        return _cached_kaggle(preset[len("kaggle://"):])
    return _local_directory(preset)


def _local_directory(preset):
    path = Path(preset).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise PresetNotFoundError(
            f"Preset {preset!r} is a file, not a directory. Pass the preset "
            "directory (the one holding config.json)."
        )
    hint = registry.closest(preset, registry.BACKBONE_PRESETS)
    hint = f" Did you mean {', '.join(map(repr, hint))}?" if hint else ""
    raise PresetNotFoundError(
        f"Unknown preset {preset!r}: not a built-in preset name, not an existing "
        f"directory, not an hf:// or kaggle:// handle.{hint} List the built-in "
        "names with `python scripts/list_presets.py` or `Backbone.presets`."
    )


def _from_hf(spec):
    from huggingface_hub import errors, hf_hub_download, snapshot_download

    repo_id, _, revision = spec.partition("@")
    revision = revision or None
    handle = f"hf://{spec}"
    try:
        config_file = hf_hub_download(repo_id, "config.json", revision=revision)
        with open(config_file) as f:
            ours = "class_name" in json.load(f)
        path = snapshot_download(
            repo_id, revision=revision, allow_patterns=OUR_FILES if ours else HF_FILES
        )
    except errors.GatedRepoError as e:
        raise PresetDownloadError(
            f"{handle} is a gated repository: accept its licence on its Hugging "
            "Face page, then log in (`hf auth login` or set HF_TOKEN) and retry."
        ) from e
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as e:
        raise PresetNotFoundError(
            f"{handle}: no such Hugging Face repository or revision (or it is "
            "private: log in with `hf auth login`). Check the spelling."
        ) from e
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as e:
        raise _not_cached_offline(handle) from e
    except errors.EntryNotFoundError as e:
        raise PresetNotFoundError(
            f"{handle} has no config.json at its root: it is not a preset nor a "
            "transformers checkpoint."
        ) from e
    except OSError as e:
        raise PresetDownloadError(f"Downloading {handle} failed: {e}") from e
    return Path(path)


def _not_cached_offline(handle):
    return PresetDownloadError(
        f"{handle} is not in the Hugging Face cache "
        f"({os.environ.get('HF_HUB_CACHE', '~/.cache/huggingface/hub')}) and "
        "cannot be downloaded (offline, or HF_HUB_OFFLINE=1). Download it once "
        "with network access, then it loads offline."
    )


def _cached_hf(spec):
    from huggingface_hub import constants, try_to_load_from_cache

    repo_id, _, revision = spec.partition("@")
    found = try_to_load_from_cache(repo_id, "config.json", revision=revision or None)
    if isinstance(found, str):
        return Path(found).parent
    if constants.HF_HUB_OFFLINE:
        raise _not_cached_offline(f"hf://{spec}")
    return None


def _cached_kaggle(spec):
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle

    try:
        parsed = parse_model_handle(spec)
    except ValueError as e:
        raise PresetNotFoundError(
            f"kaggle://{spec} is not a Kaggle model handle: expected "
            "kaggle://owner/model/framework/variant[/version]."
        ) from e
    if not parsed.is_versioned():
        return _newest_cached_kaggle(parsed)
    found = Cache().load_from_cache(parsed)
    return Path(found) if found else None


def _from_kaggle(spec):
    import kagglehub
    from kagglehub.handle import parse_model_handle

    handle = f"kaggle://{spec}"
    try:
        parsed = parse_model_handle(spec)
    except ValueError as e:
        raise PresetNotFoundError(
            f"{handle} is not a Kaggle model handle: expected "
            "kaggle://owner/model/framework/variant[/version]."
        ) from e
    try:
        return Path(kagglehub.model_download(spec))
    except Exception as e:  # kagglehub raises requests/its own errors alike
        cached = None if parsed.is_versioned() else _newest_cached_kaggle(parsed)
        if cached is not None:
            log.warning("%s: could not reach Kaggle (%s); using cached version %s.",
                        handle, type(e).__name__, cached.name)
            return cached
        raise PresetDownloadError(
            f"{handle} could not be downloaded and is not in the kagglehub cache "
            f"(KAGGLEHUB_CACHE): {type(e).__name__}: {e}. Check the handle and "
            "your network or Kaggle credentials; a downloaded version loads offline."
        ) from e


def _newest_cached_kaggle(parsed):
    """The newest completely downloaded version of an unversioned handle."""
    from kagglehub.cache import Cache, get_cached_path

    variant_dir = Path(get_cached_path(parsed.with_version(0))).parent
    versions = sorted(
        (int(p.name) for p in variant_dir.glob("*") if p.name.isdigit()), reverse=True
    )
    for version in versions:
        found = Cache().load_from_cache(parsed.with_version(version))
        if found:
            return Path(found)
    return None
