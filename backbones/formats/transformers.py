"""transformers checkpoints: `config.json` with `model_type`, safetensors
weights (`HFCheckpoint`), tokenizer files. Converted on load by the family
converter registered for the `model_type` (`registry.register_converter`).
"""

from backbones import formats, registry
from backbones.common.sentencepiece import convert_spm_tokenizer
from backbones.errors import PresetFormatError
from backbones.formats.base import PresetReader, built_to_be_filled
from backbones.hf_checkpoint import HFCheckpoint
from backbones.tokenizer import Tokenizer


def converter_for(hf_config, directory):
    """The converter registered for `hf_config["model_type"]`, or a clear error."""
    model_type = hf_config["model_type"]
    converter = registry.HF_CONVERTERS.get(model_type)
    if converter is None:
        raise PresetFormatError(
            f"{directory}/config.json is a transformers checkpoint of model_type "
            f"{model_type!r}, which we cannot convert. Supported: "
            f"{sorted(registry.HF_CONVERTERS)}."
        )
    return converter


@registry.register_format(formats.TRANSFORMERS)
class TransformersCheckpoint(PresetReader):
    """A transformers checkpoint directory (see `backbones.formats.base.PresetReader`).

    The converter maps the config to constructor arguments and every tensor
    to a variable; tensors left over are an error.
    """

    name = formats.TRANSFORMERS

    def __init__(self, directory, config):
        super().__init__(directory, config)
        self.converter = converter_for(config, directory)

    def backbone_class(self):
        return registry.BACKBONE_CLASSES[self.converter.backbone_class]

    def backbone_kwargs(self, load_weights=True):
        return self.converter.convert_config(self.config)

    def build(self, target, kwargs):
        reader = HFCheckpoint(self.directory)
        # Built unallocated; each variable is then created from its converted
        # tensor (backbones/variables.py): the weights are held once.
        with built_to_be_filled(lambda: target(**kwargs)) as backbone:
            self.converter.convert_weights(backbone, reader, self.config)
        reader.check_all_used(ignore=getattr(self.converter, "ignored_tensors", ()))
        return backbone

    def tokenizer(self):
        return checkpoint_tokenizer(self.converter, self.directory)


def checkpoint_tokenizer(converter, directory):
    """The tokenizer of a transformers checkpoint directory, or None.

    `tokenizer.json` when present; else the family converter's own files
    (`convert_tokenizer`: GPT-2's vocab.json + merges.txt, BERT's vocab.txt);
    else a SentencePiece `tokenizer.model` (Llama 2, Mistral, Gemma, any family).
    """
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
