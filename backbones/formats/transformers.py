"""transformers checkpoints: `config.json` with `model_type`, safetensors
weights (`HFCheckpoint`), tokenizer files.

Read: converted on load by the family converter registered for the
`model_type` (`registry.register_converter`).

Write (`export`): `config.json` (the family converter's `export_config`, the
inverse of its `convert_config`), `model.safetensors` (or shards plus
`model.safetensors.index.json`) from the family's weight table, and the
tokenizer as transformers reads it (`tokenizer.json`,
`tokenizer_config.json`, `special_tokens_map.json`). LoRA layers export
their merged kernels. The directory is written atomically, like a preset.
"""

import json
import struct
from pathlib import Path

import numpy as np

from backbones import formats, preset_io, registry, weight_table
from backbones.common.sentencepiece import convert_spm_tokenizer
from backbones.errors import ConversionError, PresetFormatError, QuantizationError
from backbones.formats.base import PresetReader, built_to_be_filled
from backbones.hf_checkpoint import HFCheckpoint
from backbones.tokenizer import ROLES, Tokenizer

_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
INDEX_FILE = "model.safetensors.index.json"


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


# -- write ---------------------------------------------------------------

def exporter_for(backbone):
    """The registered converter (and its model_type) that writes `backbone`'s class."""
    name = type(backbone).__name__
    for model_type, converter in registry.HF_CONVERTERS.items():
        if converter.backbone_class != name or not hasattr(converter, "export_config"):
            continue
        chosen = converter.export_model_type(backbone) if hasattr(converter, "export_model_type") else model_type
        if chosen is None:
            raise ConversionError(
                f"This {name}'s configuration ({_config_summary(backbone)}) matches no transformers "
                "architecture we write; export is not possible.")
        return chosen, registry.HF_CONVERTERS[chosen]
    raise ConversionError(f"{name} has no transformers exporter (families with one: "
                          f"{sorted({c.backbone_class for c in registry.HF_CONVERTERS.values() if hasattr(c, 'export_config')})}).")


def _config_summary(backbone):
    keys = ("sliding_window", "attention_bias", "attention_output_bias")
    return ", ".join(f"{k}={getattr(backbone, k)!r}" for k in keys if hasattr(backbone, k))


def export(backbone, directory, head="base", head_layer=None, max_shard_size=5.0, tokenizer=None):
    """Writes `backbone` as a transformers checkpoint directory.

    Args:
        head: str. `"base"` (`*Model`: hidden states), `"causal_lm"`
            (`*ForCausalLM`) or `"classifier"` (`*ForSequenceClassification`,
            with `head_layer` the logits Dense).
        max_shard_size: float. GB per safetensors shard.
        tokenizer: backbones.Tokenizer. Default: the backbone's own.
    """
    if backbone.quantized:
        raise QuantizationError(
            f"This {type(backbone).__name__} is quantized (int8): it cannot be exported. Load the "
            "unquantized base, load_lora_weights(adapter) into it and export that.")
    model_type, converter = exporter_for(backbone)
    architectures = converter.architectures
    if head not in architectures:
        raise ConversionError(
            f"transformers has no {head!r} architecture for {model_type} that we write "
            f"(we write {sorted(architectures)}).")
    architecture, prefix = architectures[head]
    entries = [(e.full_name(prefix), e) for e in converter.weight_table(backbone)]
    tokenizer = tokenizer if tokenizer is not None else backbone.tokenizer
    config = {"model_type": model_type, "architectures": [architecture], **converter.export_config(backbone),
              **_token_ids(tokenizer), "dtype": _dtype(backbone)}
    if head == "causal_lm" and getattr(converter, "lm_head", None) and converter.lm_head(backbone):
        entries.append(("lm_head.weight", converter.lm_head(backbone)))
    if head == "classifier":
        entries += _classifier_entries(backbone, head_layer, model_type, config)
    with preset_io.atomic_directory(directory) as tmp:
        write_safetensors(tmp, entries, max_shard_size)
        preset_io.write_json(tmp / "config.json", config)
        if tokenizer is not None:
            write_tokenizer(tokenizer, tmp, backbone, head)


def _special_template(tokenizer, backbone, head):
    """The tokens around a text (`$A`) that `tasks.Preprocessor` adds for `head`: an encoder's
    `[CLS] $A [SEP]`, a decoder classifier's `$A [EOS]`, a causal LM's prompt `[BOS] $A`; None
    for a bare decoder (as transformers' GPT-2) or a tokenizer without those roles."""
    token = tokenizer.special_tokens.get
    if backbone is not None and backbone.is_encoder:
        start, end = token("cls") or token("bos"), token("sep") or token("eos")
    elif head == "classifier":
        start, end = None, token("eos")
    elif head == "causal_lm":
        start, end = token("bos"), None
    else:
        return None
    if not (start or end) or (backbone is not None and backbone.is_encoder and not (start and end)):
        return None
    return [t for t in (start, "$A", end) if t]


def _dtype(backbone):
    return backbone.token_embedding.variable_dtype


def _token_ids(tokenizer):
    if tokenizer is None:
        return {}
    return {f"{role}_token_id": tokenizer.special_token_id(role) for role in ("bos", "eos", "pad")
            if tokenizer.special_token_id(role) is not None}


def _classifier_entries(backbone, layer, model_type, config):
    num_classes = layer.units
    config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_classes)}
    config["label2id"] = {f"LABEL_{i}": i for i in range(num_classes)}
    if backbone.is_encoder:
        # BertForSequenceClassification: pooler (tanh dense on [CLS]) -> dropout ->
        # `classifier` with a bias: our TextClassifier on BERT's pooled_output, exactly.
        return [(e.name, e) for e in weight_table.dense("classifier", layer)]
    # Decoders: transformers' `score` is a Linear without bias, applied to the hidden
    # state of the rightmost token that is not `pad_token_id`. A bias cannot be
    # carried there (any other class would need trust_remote_code), and dropping
    # a trained one would change every logit: a zero bias exports, any other refuses.
    if layer.use_bias and np.any(np.asarray(layer.bias.numpy()) != 0):
        raise ConversionError(
            f"The classifier head {layer.name!r} has a non-zero bias, which transformers' "
            f"{model_type} sequence-classification head (`score`, no bias) cannot hold. Train the "
            "classifier with TextClassifier(..., head_bias=False) to export it.")
    pad, eos = config.get("pad_token_id"), config.get("eos_token_id")
    if pad is None:
        # Our packing pads with id 0 when the tokenizer has no pad token; the pooled
        # token (the appended eos) is then the rightmost one that is not 0.
        pad = config["pad_token_id"] = 0
    if pad == eos:
        raise ConversionError(
            f"The tokenizer's pad token is its eos token (id {pad}): transformers pools the "
            "rightmost token that is not padding, which would skip the eos our classifier pools. "
            "Give the tokenizer a distinct pad token to export this classifier.")
    return [("score.weight", weight_table.Entry("score.weight", ((layer, "kernel"),), weight_table.LINEAR,
                                                prefixed=False))]


def write_safetensors(directory, entries, max_shard_size=5.0):
    """Writes `entries` ((name, table entry)) as `model.safetensors`, or as
    shards of at most `max_shard_size` GB plus the index. Each tensor is
    computed (merged, concatenated) and written one at a time."""
    planned = []
    for name, entry in entries:
        shape, dtype = weight_table.shapes(entry)
        if dtype not in _SAFETENSORS_DTYPES:
            raise ConversionError(f"Weight {name!r} has dtype {dtype}, which safetensors export does not support.")
        planned.append((name, entry, shape, dtype, int(np.prod(shape, dtype=np.int64)) * np.dtype(
            _numpy_dtype(dtype)).itemsize))
    limit = max_shard_size * 1e9
    shards, current, size = [], [], 0
    for item in planned:
        if current and size + item[4] > limit:
            shards.append(current)
            current, size = [], 0
        current.append(item)
        size += item[4]
    shards.append(current)
    directory = Path(directory)
    if len(shards) == 1:
        _write_file(directory / "model.safetensors", shards[0])
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        _write_file(directory / filename, shard)
        weight_map.update({item[0]: filename for item in shard})
    preset_io.write_json(directory / INDEX_FILE, {
        "metadata": {"total_size": sum(item[4] for item in planned)}, "weight_map": weight_map})


def _numpy_dtype(dtype):
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def _write_file(path, items):
    # safetensors: 8-byte little-endian header length, JSON header, raw
    # little-endian data; transformers requires the "pt" format tag.
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, _, shape, dtype, nbytes in items:
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name, entry, shape, dtype, nbytes in items:
            value = weight_table.export(entry).astype(_numpy_dtype(dtype), copy=False)
            if value.shape != tuple(shape) or value.nbytes != nbytes:
                raise ConversionError(f"Weight {name!r} changed shape while exporting.")
            f.write(np.ascontiguousarray(value).reshape(-1).view(np.uint8).data)
            del value


def write_tokenizer(tokenizer, directory, backbone=None, head="base"):
    """`tokenizer.json` plus transformers' `tokenizer_config.json` and
    `special_tokens_map.json`, so `AutoTokenizer` loads it as a
    `PreTrainedTokenizerFast` with our vocabulary and special-token roles
    (and our own loader reads the roles back from the same keys).

    `tokenizer(text)` adds the special tokens our preprocessor adds for `head`
    (`_special_template`), so a transformers user's ids are the ones the model
    was trained on: a decoder classifier pools the eos it appends."""
    import tokenizers

    directory = Path(directory)
    fast = tokenizer.tokenizer
    template = _special_template(tokenizer, backbone, head)
    if template:
        fast = tokenizers.Tokenizer.from_str(fast.to_str())  # a copy: ours always encodes without them
        fast.post_processor = tokenizers.processors.TemplateProcessing(
            single=" ".join(token if token == "$A" else f"{token}:0" for token in template),
            special_tokens=[(t, tokenizer.token_to_id(t)) for t in dict.fromkeys(template) if t != "$A"])
    fast.save(str(directory / "tokenizer.json"))
    roles = {f"{role}_token": token for role, token in tokenizer.special_tokens.items() if role in ROLES}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False, **roles}
    if getattr(tokenizer, "chat_template", None):
        config["chat_template"] = tokenizer.chat_template  # transformers' apply_chat_template reads it here
    if backbone is not None and getattr(backbone, "max_sequence_length", None):
        config["model_max_length"] = int(backbone.max_sequence_length)
    preset_io.write_json(directory / "tokenizer_config.json", config)
    preset_io.write_json(directory / "special_tokens_map.json", roles)
