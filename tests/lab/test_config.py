"""The real conf/ tree: every option of every group composes and validates;
bad values fail at composition or validation, naming the key."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import backbones
from lab import preflight, schema

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = [p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"]
schema.register()


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def make(overrides=()):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=False)


def test_every_config_file_starts_with_a_command():
    for path in CONF.rglob("*.yaml"):
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        commands = [line for line in lines[:3] if line.startswith("# python train.py")]
        assert commands, f"{path} must start with a comment giving the command that runs it"


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes_and_validates(group):
    extra = {"data": {"local": ["data.path=x.csv", "data.num_classes=2"],
                      "huggingface": ["data.name=imdb", "data.num_classes=2"],
                      "sentiment_text": ["task=causal_lm"], "chat": ["task=causal_lm"]},
             "task": {"causal_lm": ["data=sentiment_text"]}}
    for option in options(group):
        cfg = make([f"{group}={option}", *extra.get(group, {}).get(option, [])])
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        schema.validate(cfg)
        if group == "backbone":  # every backbone option names a registered preset
            assert cfg.backbone.preset in backbones.Backbone.presets, option
            family = backbones.registry.FAMILIES[backbones.Backbone.presets[cfg.backbone.preset]["class_name"]]
            preflight.lora_fits(make(["lora=all_linear", "lora.rank=4"]).lora, family)


@pytest.mark.parametrize("override, message", [
    (["trainer.epoch=3"], "epoch"),  # typo: unknown key
    (["trainer.batch_size=large"], "batch_size"),  # wrong type
    (["lora.rank=abc"], "rank"),
])
def test_typos_and_wrong_types_fail_at_composition(override, message):
    with pytest.raises(ConfigCompositionException, match=message):
        make(override)


@pytest.mark.parametrize("override, message", [
    (["lora.rank=0"], "lora.rank=0 must be positive"),
    (["lora.rank=-2"], "lora.rank=-2"),
    (["data.num_classes=null"], "task.num_classes"),
    (["task.name=regression"], "task.name"),
    (["backbone.dtype=float8"], "backbone.dtype"),
    (["data=local", "data.num_classes=2"], "data.path"),
    (["data.validation_fraction=1.5"], "validation_fraction"),
    (["tracking.save=adapters"], "tracking.save"),
    (["tracking.log_preset=false"], "tracking.log_preset=False was replaced by tracking.save"),  # the old key
    (["backbone.quantize=int4", "lora.rank=4"], "backbone.quantize='int4' is not one of"),
    (["backbone.quantize=int8"], "int8 weights cannot train. Set lora.rank"),
    (["backbone.quantize=int8", "lora.rank=4", "backbone.dtype=float16"], "do not compute in float16"),
    (["tracking.register=team/model"], "tracking.register='team/model' is not a registered model name"),
    (["tracking.register=clf", "tracking.save=none"], "saves no model to register"),
    (["tracking.alias=champion"], "tracking.register is not set"),
    (["tracking.register=clf", "tracking.alias=latest"], "tracking.alias='latest' is not a valid alias"),
    (["tracking.register=clf", "tracking.alias=v2"], "tracking.alias='v2' is not a valid alias"),
    # '+' adds a key past the schema (as Hydra's "Could not override" suggests): a typo must not be ignored.
    (["+optimizer.learnig_rate=3e-4"], "optimizer.learnig_rate is not a config key.* optimizer.learning_rate"),
    (["+lora.rnak=4"], "lora.rnak is not a config key"),
    (["+epochs=4"], "epochs is not a config key"),
])
def test_impossible_values_fail_validation(override, message):
    try:
        cfg = make(override)
    except ConfigCompositionException as e:  # MISSING values fail even earlier
        assert "path" in str(e)
        return
    with pytest.raises(schema.ConfigError, match=message.replace("(", r"\(")):
        schema.validate(cfg)


def test_lora_targets_must_exist_on_the_backbone():
    cfg = make(["lora.rank=4", "lora.targets=[query,gate]"])
    with pytest.raises(schema.ConfigError, match="gate"):
        preflight.lora_fits(cfg.lora, backbones.registry.FAMILIES["GPT2Backbone"])
