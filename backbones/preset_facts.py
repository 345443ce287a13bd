"""What a preset is, read from its config.json alone: no keras, no download.

The pre-flight check of `train.py` asks this before anything heavy starts:
the family (encoder or decoder, LoRA target names) and the number of
positions, for our presets, transformers checkpoints and keras-hub presets.
"""

import dataclasses
from pathlib import Path
from typing import Optional

from backbones import formats, preset_io, registry
from backbones.errors import PresetFormatError
from backbones.handles import locate_preset


@dataclasses.dataclass
class PresetFacts:
    """Args:
        directory: Path or None. None: a hub handle not cached yet (the
            other fields are then those of a built-in name's family, or None).
        format: str or None. `"ours"`, `"transformers"` or `"keras_hub"`.
        family: registry.Family or None.
        max_positions: int or None. Positions the model was built or trained for.
    """

    directory: Optional[Path]
    format: Optional[str] = None
    family: Optional[registry.Family] = None
    max_positions: Optional[int] = None


def read_preset_facts(preset):
    """The `PresetFacts` of `preset` (any handle `Backbone.from_preset` takes).

    Raises `PresetNotFoundError` / `PresetDownloadError` as loading would, and
    `PresetFormatError` for a config.json that no registered family converts.

    Example:
    >>> facts = read_preset_facts("bert_tiny_random_en")
    >>> facts.format, facts.family.is_encoder, facts.max_positions
    ('ours', True, 512)
    """
    directory = locate_preset(preset)
    if directory is None:
        meta = registry.BACKBONE_PRESETS.get(str(preset))
        return PresetFacts(None, family=registry.FAMILIES[meta["class_name"]] if meta else None)
    path = Path(directory) / preset_io.CONFIG_FILE
    config = preset_io.read_json(path)
    fmt = formats.detect(config)
    family = formats.family_of(config, fmt)
    if family is None:
        name = formats.model_name(config, fmt)
        supported = sorted({n for f in registry.FAMILIES.values() for n in formats.family_names(f, fmt)})
        raise PresetFormatError(
            f"{path} describes a {fmt.replace('_', '-')} model {name!r}, which no registered "
            f"backbone family loads. Supported: {supported}."
        )
    fields = config if fmt == "transformers" else config.get("config", {})
    key = family.max_positions.get(fmt)
    positions = fields.get(key) if key else None
    return PresetFacts(Path(directory), fmt, family, int(positions) if positions else None)
