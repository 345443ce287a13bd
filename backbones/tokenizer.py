"""`Tokenizer`: a `tokenizers.Tokenizer` plus the roles of its special tokens.

Saved in a preset as `tokenizer.json` (the `tokenizers` format, readable by
Hugging Face too) and `tokenizer_config.json` (`{"special_tokens": {role: token}}`).
Reads a transformers tokenizer directory as well (`tokenizer.json` with
`tokenizer_config.json` in transformers' format); SentencePiece model files
(`tokenizer.model`, keras-hub's `vocabulary.spm`) are converted by
`backbones.common.sentencepiece.tokenizer_from_spm`. Encoding is batched in Rust.
"""

import json
from pathlib import Path

import tokenizers

from backbones import formats
from backbones.errors import PresetFormatError
from backbones.handles import resolve_preset

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
ROLES = ("bos", "eos", "pad", "unk", "cls", "sep", "mask")


class Tokenizer:
    """Text to token ids and back, with named special tokens.

    Args:
        tokenizer: tokenizers.Tokenizer. The underlying Rust tokenizer.
        special_tokens: dict. Role (`bos`, `eos`, `pad`, `unk`, `cls`, `sep`,
            `mask`) to token string; each must be in the vocabulary.

    Example:
    >>> tok = Tokenizer.from_preset("gpt2_tiny_en")
    >>> ids = tok(["hello world"])[0]
    >>> tok.detokenize([ids])
    ['hello world']
    """

    def __init__(self, tokenizer, special_tokens=None):
        self.tokenizer = tokenizer
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        for role, token in self.special_tokens.items():
            if role not in ROLES:
                raise ValueError(f"Unknown special token role {role!r}; use one of {ROLES}.")
            if tokenizer.token_to_id(token) is None:
                raise PresetFormatError(
                    f"Special token {role}={token!r} is not in the tokenizer's vocabulary."
                )

    def __call__(self, texts):
        """Token ids of each text, without special tokens (packing adds them)."""
        if isinstance(texts, str):
            texts = [texts]
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encodings]

    def detokenize(self, ids, skip_special_tokens=True):
        return self.tokenizer.decode_batch(
            [list(map(int, x)) for x in ids], skip_special_tokens=skip_special_tokens
        )

    @property
    def vocabulary_size(self):
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token):
        return self.tokenizer.token_to_id(token)

    def special_token_id(self, role):
        """Id of the special token `role`, or None if the tokenizer has none."""
        token = self.special_tokens.get(role)
        return None if token is None else self.tokenizer.token_to_id(token)

    def save_to_preset(self, directory):
        directory = Path(directory)
        self.tokenizer.save(str(directory / TOKENIZER_FILE))
        (directory / TOKENIZER_CONFIG_FILE).write_text(
            json.dumps({"special_tokens": self.special_tokens}, indent=2, sort_keys=True) + "\n"
        )

    @classmethod
    def from_preset(cls, preset):
        """Loads the tokenizer of a preset (any handle `Backbone.from_preset` takes,
        in any format it reads: see `backbones.formats`)."""
        directory = resolve_preset(preset)
        if (directory / "config.json").exists():
            with formats.open_preset(directory) as reader:
                tokenizer = reader.tokenizer()
        else:  # a directory of tokenizer files only
            tokenizer = cls.from_directory(directory)
        if tokenizer is None:
            raise PresetFormatError(
                f"Preset {preset!r} ({directory}) has no {TOKENIZER_FILE}, or a keras-hub "
                "tokenizer of a family whose tokenizer we cannot convert yet. Use a preset "
                "saved with one, or attach one before saving."
            )
        return tokenizer

    @classmethod
    def from_directory(cls, directory):
        """The tokenizer in `directory` (a `tokenizers` tokenizer.json, with our
        or transformers' tokenizer_config.json), or None if it has no tokenizer.json.

        Presets in other formats (keras-hub's tokenizer.json is a Keras config):
        `from_preset`, which reads any format.
        """
        directory = Path(directory)
        path = directory / TOKENIZER_FILE
        if not path.exists():
            return None
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust loader raises a bare Exception
            raise PresetFormatError(f"{path} is not a valid tokenizers file: {e}") from e
        config_path = directory / TOKENIZER_CONFIG_FILE
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        return cls(tokenizer, special_tokens_from_config(config, tokenizer))


def special_tokens_from_config(config, tokenizer):
    """Roles from our tokenizer_config.json or a transformers one."""
    if isinstance(config.get("special_tokens"), dict):
        return config["special_tokens"]
    roles = {}
    for role in ROLES:
        token = config.get(f"{role}_token")
        if isinstance(token, dict):  # transformers' AddedToken form
            token = token.get("content")
        if isinstance(token, str) and tokenizer.token_to_id(token) is not None:
            roles[role] = token
    return roles
