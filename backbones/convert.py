"""Loading a transformers checkpoint directory through its family's converter."""

from backbones import registry
from backbones.errors import PresetFormatError
from backbones.hf_checkpoint import HFCheckpoint
from backbones.tokenizer import Tokenizer


def load_hf_checkpoint(cls, directory, hf_config, load_weights, kwargs, preset):
    """Builds a backbone from `config.json` + safetensors, converting on the fly.

    The family converter registered for `hf_config["model_type"]` maps the
    config to constructor arguments and every tensor to a variable; tensors
    left over are an error.
    """
    from backbones.backbone import built_to_be_filled, check_subclass

    model_type = hf_config["model_type"]
    converter = registry.HF_CONVERTERS.get(model_type)
    if converter is None:
        raise PresetFormatError(
            f"{directory}/config.json is a transformers checkpoint of model_type "
            f"{model_type!r}, which we cannot convert. Supported: "
            f"{sorted(registry.HF_CONVERTERS)}."
        )
    target = registry.BACKBONE_CLASSES[converter.backbone_class]
    check_subclass(cls, target, preset, kwargs)
    init = {**converter.convert_config(hf_config), **kwargs}
    if load_weights:
        reader = HFCheckpoint(directory)
        # Built unallocated; each variable is then created from its converted
        # tensor (backbones/variables.py): the weights are held once.
        with built_to_be_filled(lambda: target(**init)) as backbone:
            converter.convert_weights(backbone, reader, hf_config)
        reader.check_all_used(ignore=getattr(converter, "ignored_tensors", ()))
    else:
        backbone = target(**init)
    backbone.tokenizer = checkpoint_tokenizer(converter, directory)
    return backbone


def checkpoint_tokenizer(converter, directory):
    """The tokenizer of a transformers checkpoint directory, or None.

    `tokenizer.json` when present; else the family converter's own files
    (`convert_tokenizer`: GPT-2's vocab.json + merges.txt, BERT's vocab.txt);
    else a SentencePiece `tokenizer.model` (Llama 2, Mistral, Gemma, any family).
    """
    from backbones.common.sentencepiece import convert_spm_tokenizer

    tokenizer = Tokenizer.from_directory(directory)
    if tokenizer is None and hasattr(converter, "convert_tokenizer"):
        tokenizer = converter.convert_tokenizer(directory)
    if tokenizer is None:
        tokenizer = convert_spm_tokenizer(directory)
    if tokenizer is not None:
        # Roles that the transformers tokenizer class implies by default, which
        # many tokenizer_config.json files omit (BERT's [CLS], [SEP], ...).
        for role, token in getattr(converter, "default_special_tokens", {}).items():
            if role not in tokenizer.special_tokens and tokenizer.token_to_id(token) is not None:
                tokenizer.special_tokens[role] = token
    return tokenizer
