"""SentencePiece model files (`tokenizer.model`, keras-hub's `vocabulary.spm`) as our `Tokenizer`.

A SentencePiece model is a `ModelProto` protobuf. We read the few fields a
tokenizer needs with our own wire-format decoder (no `sentencepiece` or
`protobuf` package at runtime) and rebuild the same encoding with `tokenizers`:

- BPE models (Llama 2, Gemma): SentencePiece merges, over the whole normalized
  text, the adjacent pair whose concatenation is the highest-scoring piece. A
  `tokenizers` BPE whose merges are every split of each piece into two pieces,
  ranked by the piece's score, makes the same choices.
- Unigram models: the same pieces and scores in a `tokenizers` Unigram (Viterbi).
- Normalization: the precompiled character map (if any), then
  `remove_extra_whitespaces` (strip, collapse runs of spaces), the dummy "▁"
  prefix (`add_dummy_prefix`), spaces to "▁".
- Byte fallback: characters outside the vocabulary become `<0xNN>` pieces.
- USER_DEFINED pieces are added tokens matched in the normalized text, as
  SentencePiece does; CONTROL and UNKNOWN pieces are special tokens.

Known differences from `sentencepiece` itself: a control token's text (`<s>`)
inside the input is read as that token (as transformers' Llama/Gemma
tokenizers do; SentencePiece reads it as characters); a text that is exactly
one user-defined piece gets no dummy prefix; decoding an unknown id gives its
piece (`<unk>`, or nothing with skip_special_tokens) instead of " ⁇ ".
"""

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, normalizers

from backbones.errors import PresetFormatError
from backbones.tokenizer import TOKENIZER_CONFIG_FILE, Tokenizer, special_tokens_from_config

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2
MODEL_TYPE_NAMES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}
SPACE = "\u2581"  # "▁", SentencePiece's visible space


@dataclass
class Piece:
    piece: str
    score: float = 0.0
    type: int = NORMAL


@dataclass
class SentencePieceModel:
    """The parts of a SentencePiece `ModelProto` that encoding and decoding need.

    Defaults are the proto's own defaults (a field absent from the file has them).
    """

    pieces: list = field(default_factory=list)
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    treat_whitespace_as_suffix: bool = False
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True


# --- protobuf wire format --------------------------------------------------
# A message is a sequence of (tag, value); tag = field_number << 3 | wire_type.
# Wire types: 0 varint, 1 fixed 64-bit, 2 length-delimited, 5 fixed 32-bit.

def _varint(data, pos):
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def _fields(data):
    """Yields (field_number, wire_type, value) of one message; value is an int for
    varints, bytes for length-delimited and fixed-width fields."""
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire_type == 0:
            value, pos = _varint(data, pos)
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, pos = data[pos:pos + size], pos + size
            if pos > end:
                raise ValueError("truncated fixed-width field")
        elif wire_type == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
            if pos > end:
                raise ValueError("length-delimited field runs past the end")
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield number, wire_type, value


def _int32(value):
    # int32 fields hold negatives (pad_id = -1) as 64-bit two's complement varints.
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _expect(wire_type, expected, what):
    if wire_type != expected:
        raise ValueError(f"{what} has wire type {wire_type}, expected {expected}")


def _parse_piece(data):
    piece = Piece("")
    for number, wire_type, value in _fields(data):
        if number == 1:
            _expect(wire_type, 2, "SentencePiece.piece")
            piece.piece = bytes(value).decode("utf-8")
        elif number == 2:
            _expect(wire_type, 5, "SentencePiece.score")
            piece.score = struct.unpack("<f", value)[0]
        elif number == 3:
            _expect(wire_type, 0, "SentencePiece.type")
            piece.type = value
    return piece


# TrainerSpec / NormalizerSpec fields we read: number -> (attribute, kind).
_TRAINER_FIELDS = {3: ("model_type", int), 35: ("byte_fallback", bool), 40: ("unk_id", "int32"),
                   41: ("bos_id", "int32"), 42: ("eos_id", "int32"), 43: ("pad_id", "int32"),
                   24: ("treat_whitespace_as_suffix", bool)}
_NORMALIZER_FIELDS = {1: ("normalizer_name", str), 2: ("precompiled_charsmap", bytes),
                      3: ("add_dummy_prefix", bool), 4: ("remove_extra_whitespaces", bool),
                      5: ("escape_whitespaces", bool)}


def _parse_into(model, data, spec, what):
    for number, wire_type, value in _fields(data):
        if number not in spec:
            continue
        attribute, kind = spec[number]
        if kind is str or kind is bytes:
            _expect(wire_type, 2, f"{what}.{attribute}")
            value = bytes(value).decode("utf-8") if kind is str else bytes(value)
        else:
            _expect(wire_type, 0, f"{what}.{attribute}")
            value = _int32(value) if kind == "int32" else kind(value)
        setattr(model, attribute, value)


def parse_model_proto(data):
    """Reads a serialized SentencePiece `ModelProto` into a `SentencePieceModel`.

    Raises ValueError on bytes that are not one.

    Example:
    >>> model = parse_model_proto(bytes([0x0A, 0x08, 0x0A, 0x01, 0x61, 0x15, 0, 0, 0x80, 0xBF]))
    >>> model.pieces
    [Piece(piece='a', score=-1.0, type=1)]
    """
    data = memoryview(bytes(data))
    model = SentencePieceModel()
    for number, wire_type, value in _fields(data):
        if number == 1:
            _expect(wire_type, 2, "ModelProto.pieces")
            model.pieces.append(_parse_piece(value))
        elif number == 2:
            _expect(wire_type, 2, "ModelProto.trainer_spec")
            _parse_into(model, value, _TRAINER_FIELDS, "TrainerSpec")
        elif number == 3:
            _expect(wire_type, 2, "ModelProto.normalizer_spec")
            _parse_into(model, value, _NORMALIZER_FIELDS, "NormalizerSpec")
    if not model.pieces:
        raise ValueError("no pieces")
    return model


# --- tokenizers.Tokenizer ---------------------------------------------------

def build_tokenizer(model):
    """A `tokenizers.Tokenizer` that encodes and decodes like the SentencePiece `model`."""
    if model.model_type not in (UNIGRAM, BPE):
        raise ValueError(f"model_type {MODEL_TYPE_NAMES.get(model.model_type, model.model_type)!r} "
                         "is not supported (only bpe and unigram)")
    if model.treat_whitespace_as_suffix:
        raise ValueError("treat_whitespace_as_suffix=true is not supported")
    pieces = model.pieces
    unk_id = model.unk_id if 0 <= model.unk_id < len(pieces) else None
    if model.model_type == BPE:
        tokenizer = tokenizers.Tokenizer(_bpe(pieces, unk_id, model.byte_fallback))
    else:
        tokenizer = tokenizers.Tokenizer(_unigram(pieces, unk_id, model.byte_fallback))

    user_defined = [p.piece for p in pieces if p.type == USER_DEFINED]
    steps = []
    if model.precompiled_charsmap:
        steps.append(normalizers.Precompiled(model.precompiled_charsmap))
    if model.remove_extra_whitespaces:
        # Only U+0020 counts, as in SentencePiece (after the character map).
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Replace(Regex(r"\A | \z"), "")]
    if model.add_dummy_prefix:
        # An empty text (or one the whitespace step emptied) gets no prefix, as in
        # SentencePiece. Added tokens' own text goes through this normalizer too,
        # so it must not prefix them.
        exact_user_piece = "|".join(re.escape(p) for p in user_defined)
        start = rf"\A(?!(?:{exact_user_piece})\z)" if user_defined else r"\A"
        steps.append(normalizers.Replace(Regex(start), SPACE if model.escape_whitespaces else " "))
    if model.escape_whitespaces:
        steps.append(normalizers.Replace(" ", SPACE))
    tokenizer.normalizer = normalizers.Sequence(steps) if steps else None

    tokenizer.add_special_tokens([AddedToken(p.piece, special=True, normalized=False)
                                  for p in pieces if p.type in (CONTROL, UNKNOWN)])
    # SentencePiece matches user-defined pieces in the normalized text.
    tokenizer.add_tokens([AddedToken(p, special=False, normalized=True) for p in user_defined])

    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if model.add_dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer


def _bpe(pieces, unk_id, byte_fallback):
    vocab = {}
    for i, p in enumerate(pieces):
        vocab.setdefault(p.piece, i)
    # Pieces SentencePiece's BPE can build by merging (not control, unknown, byte).
    # Unused pieces are left out: SentencePiece splits them again after merging.
    mergeable = {p.piece for p in pieces if p.type in (NORMAL, USER_DEFINED)}
    # Higher score merges first; sorted() is stable, so ties keep vocabulary order.
    merges = []
    for p in sorted((p for p in pieces if p.type == NORMAL and len(p.piece) > 1), key=lambda p: -p.score):
        s = p.piece
        merges += [(s[:cut], s[cut:]) for cut in range(1, len(s)) if s[:cut] in mergeable and s[cut:] in mergeable]
    unk = pieces[unk_id].piece if unk_id is not None else None
    # SentencePiece emits one unknown id for a run of unknown characters.
    return models.BPE(vocab, merges, unk_token=unk, byte_fallback=byte_fallback, fuse_unk=True)


def _unigram(pieces, unk_id, byte_fallback):
    normal = [p.score for p in pieces if p.type == NORMAL]
    # Pieces SentencePiece never picks from text get a score no path prefers.
    floor = (min(normal) if normal else 0.0) - 1000.0
    vocab = [(p.piece, p.score if p.type in (NORMAL, USER_DEFINED) else floor) for p in pieces]
    return models.Unigram(vocab, unk_id=unk_id, byte_fallback=byte_fallback)


def special_tokens_from_model(model):
    """Roles from the trainer spec's ids (those >= 0 and inside the vocabulary)."""
    roles = {}
    for role in ("bos", "eos", "unk", "pad"):
        index = getattr(model, f"{role}_id")
        if 0 <= index < len(model.pieces):
            roles[role] = model.pieces[index].piece
    return roles


def tokenizer_from_spm(path, special_tokens=None):
    """Our `Tokenizer` from a SentencePiece model file (`tokenizer.model`, `vocabulary.spm`).

    Args:
        path: str or Path. The serialized SentencePiece ModelProto.
        special_tokens: dict. Role -> token, overriding the roles read from the
            model's trainer spec (bos/eos/unk/pad ids); a None value drops a role.

    Raises PresetFormatError naming `path` if it is not a SentencePiece model
    we can convert.

    Example:
    >>> import io, tempfile, sentencepiece as spm
    >>> buffer = io.BytesIO()
    >>> spm.SentencePieceTrainer.train(sentence_iterator=iter(["hello world"] * 20), model_writer=buffer,
    ...     model_type="bpe", vocab_size=300, byte_fallback=True, hard_vocab_limit=False, minloglevel=2)
    >>> path = Path(tempfile.mkdtemp()) / "tokenizer.model"
    >>> _ = path.write_bytes(buffer.getvalue())
    >>> tok = tokenizer_from_spm(path)
    >>> tok.detokenize(tok(["hello wörld"]))
    ['hello wörld']
    >>> tok.special_tokens["eos"]
    '</s>'
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PresetFormatError(f"Cannot read the SentencePiece model {path}: {e}") from e
    try:
        model = parse_model_proto(data)
        tokenizer = build_tokenizer(model)
    except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise PresetFormatError(
            f"{path} is not a SentencePiece model we can read ({e}). Replace it with the "
            "checkpoint's original tokenizer.model, or provide a tokenizer.json.") from e
    roles = special_tokens_from_model(model)
    roles.update(special_tokens or {})
    return Tokenizer(tokenizer, {r: t for r, t in roles.items() if t is not None})


SPM_FILE = "tokenizer.model"


def convert_spm_tokenizer(directory):
    """The tokenizer of a transformers checkpoint directory from its `tokenizer.model`,
    or None if it has none. Roles: the trainer spec's, then tokenizer_config.json's.

    Used by checkpoint conversion (`backbones.formats.transformers.checkpoint_tokenizer`)
    when there is no tokenizer.json (Llama 2, Mistral, Gemma).
    """
    directory = Path(directory)
    if not (directory / SPM_FILE).exists():
        return None
    tokenizer = tokenizer_from_spm(directory / SPM_FILE)
    config_path = directory / TOKENIZER_CONFIG_FILE
    if config_path.exists():
        try:
            config = json.loads(config_path.read_text())
        except ValueError as e:
            raise PresetFormatError(f"{config_path} is not valid JSON ({e}).") from e
        tokenizer.special_tokens.update(special_tokens_from_config(config, tokenizer.tokenizer))
    return tokenizer
