"""Registries refuse a name registered twice, naming both registrants."""

import dataclasses

import pytest

import backbones
from backbones import registry
from backbones.registry import DuplicateRegistrationError

backbones.load()  # every real registration first: the tests' own must all be refused


def test_hf_converter_registered_twice():
    class OtherGPT2Converter:
        backbone_class = "GPT2Backbone"

    with pytest.raises(DuplicateRegistrationError,
                       match=r"'gpt2' is registered twice: by backbones\.gpt2\.convert_hf\.GPT2Converter "
                             r"and by .*OtherGPT2Converter"):
        registry.register_converter("gpt2")(OtherGPT2Converter)
    assert registry.HF_CONVERTERS["gpt2"].__module__ == "backbones.gpt2.convert_hf"  # unchanged


def test_keras_hub_converter_registered_twice():
    with pytest.raises(DuplicateRegistrationError, match="keras-hub converter for class 'GPT2Backbone'.*convert_keras_hub"):
        registry.register_keras_hub_converter("GPT2Backbone")(type("Other", (), {}))


def test_backbone_class_registered_twice():
    with pytest.raises(DuplicateRegistrationError, match=r"Backbone class 'GPT2Backbone'.*backbones\.gpt2\.backbone\.GPT2Backbone"):
        class GPT2Backbone(backbones.Backbone):  # noqa: F811 - the clash is the point
            pass
    assert registry.BACKBONE_CLASSES["GPT2Backbone"].__module__ == "backbones.gpt2.backbone"


def test_family_and_preset_registered_twice():
    family = registry.FAMILIES["GPT2Backbone"]
    with pytest.raises(DuplicateRegistrationError, match="Backbone family 'GPT2Backbone'.*backbones.gpt2.*elsewhere"):
        registry.register_family(dataclasses.replace(family, presets={}), "elsewhere")
    with pytest.raises(DuplicateRegistrationError, match="Preset name 'gpt2_tiny_en'.*GPT2Backbone.*LlamaBackbone"):
        registry.register_presets({"gpt2_tiny_en": family.presets["gpt2_tiny_en"]}, "LlamaBackbone")


def test_preset_format_registered_twice():
    with pytest.raises(DuplicateRegistrationError, match="Preset format 'transformers'.*TransformersCheckpoint"):
        registry.register_format("transformers")(type("Mine", (), {}))


def test_the_same_registration_again_is_no_duplicate():
    # Importing a family's module again (a reload) re-runs its registrations.
    converter = registry.HF_CONVERTERS["gpt2"]
    registry.register_converter("gpt2")(converter)
    family = registry.FAMILIES["GPT2Backbone"]
    registry.register_family(family, family.package)
    assert registry.HF_CONVERTERS["gpt2"] is converter and registry.FAMILIES["GPT2Backbone"] == family
