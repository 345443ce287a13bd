"""`Tokenizer`: a `tokenizers.Tokenizer` plus the roles of its special tokens.

Saved in a preset as `tokenizer.json` (the `tokenizers` format, readable by
Hugging Face too) and `tokenizer_config.json` (`{"special_tokens": {role: token}}`, plus
`chat_template` when the model has one).
Reads a transformers tokenizer directory as well (`tokenizer.json` with
`tokenizer_config.json` in transformers' format); SentencePiece model files
(`tokenizer.model`, keras-hub's `vocabulary.spm`) are converted by
`backbones.common.sentencepiece.tokenizer_from_spm`. Encoding is batched in Rust.
"""

import json
from pathlib import Path

import tokenizers

from backbones.chat_template import ChatTemplateError, render
from backbones.errors import PresetFormatError

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where recent transformers versions save the template
ROLES = ("bos", "eos", "pad", "unk", "cls", "sep", "mask")


class Tokenizer:
    """Text to token ids and back, with named special tokens.

    Args:
        tokenizer: tokenizers.Tokenizer. The underlying Rust tokenizer.
        special_tokens: dict. Role (`bos`, `eos`, `pad`, `unk`, `cls`, `sep`,
            `mask`) to token string; each must be in the vocabulary.
        chat_template: str. The model's Jinja chat template (`apply_chat_template`), or None.

    Example:
    >>> tok = Tokenizer.from_preset("gpt2_tiny_en")
    >>> ids = tok(["hello world"])[0]
    >>> tok.detokenize([ids])
    ['hello world']
    """

    def __init__(self, tokenizer, special_tokens=None, chat_template=None):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
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

    def encode_with_offsets(self, texts):
        """`(ids, offsets)` of each text, without special tokens: `offsets[i]` is
        the `(start, end)` character range of token i in its text.

        Example:
        >>> tok = Tokenizer.from_preset("gpt2_tiny_en")
        >>> ids, offsets = tok.encode_with_offsets(["a movie"])[0]
        >>> len(ids) == len(offsets), offsets[-1][1]
        (True, 7)
        """
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [(e.ids, e.offsets) for e in encodings]

    def apply_chat_template(self, messages, add_generation_prompt=False, chat_template=None):
        r"""The text of a conversation under the model's chat template, as
        transformers' `apply_chat_template(..., tokenize=False)` renders it.

        Args:
            messages: list of dict. `{"role": "system" | "user" | "assistant", "content": str}`.
            add_generation_prompt: bool. End with the assistant's header, to generate its reply.
            chat_template: str. A template to use instead of `self.chat_template`.

        Example:
        >>> tok = Tokenizer.from_preset("gpt2_tiny_en")
        >>> tok.apply_chat_template([{"role": "user", "content": "Hi"}],
        ...                         chat_template="{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
        'user: Hi\n'
        """
        template = chat_template or self.chat_template
        if not template:
            raise ChatTemplateError(
                "This tokenizer has no chat template (no `chat_template` in its tokenizer_config.json), so "
                "chat messages cannot be rendered. Give one: data.chat_template='<jinja>' in an experiment, "
                "or tokenizer.chat_template = '<jinja>' (saved with the preset).")
        return render(template, messages, add_generation_prompt, self.special_tokens)

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
        config = {"special_tokens": self.special_tokens}
        if self.chat_template:
            config["chat_template"] = self.chat_template
        (directory / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_preset(cls, preset):
        """Loads the tokenizer of a preset (any handle `Backbone.from_preset` takes)."""
        from backbones.handles import resolve_preset

        directory = resolve_preset(preset)
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
        """The tokenizer in `directory`, or None if it has no tokenizer.json.

        A keras-hub preset's tokenizer.json (a Keras serialized config, with the
        vocabulary in `assets/tokenizer/`) is converted by the family's
        keras-hub converter; None if that family has no tokenizer converter yet.
        """
        directory = Path(directory)
        path = directory / TOKENIZER_FILE
        if not path.exists():
            return None
        if _is_keras_hub_file(path):
            from backbones.keras_hub_preset import convert_tokenizer

            return convert_tokenizer(directory)
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust loader raises a bare Exception
            raise PresetFormatError(f"{path} is not a valid tokenizers file: {e}") from e
        config_path = directory / TOKENIZER_CONFIG_FILE
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        return cls(tokenizer, special_tokens_from_config(config, tokenizer), chat_template_from(config, directory))


def _is_keras_hub_file(path):
    """True if `path` is a keras-hub serialized tokenizer config, not a `tokenizers` file."""
    from backbones.keras_hub_preset import is_keras_hub_config

    if path.stat().st_size > 1_000_000:  # a vocabulary: don't parse a large tokenizer.json twice
        return False
    try:
        return is_keras_hub_config(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # reported by the `tokenizers` loader


def chat_template_from(config, directory):
    """The chat template of a tokenizer directory: `chat_template.jinja`, or
    `chat_template` in tokenizer_config.json (a string, or transformers' list
    of named templates, of which the one named "default"), or None."""
    path = Path(directory) / CHAT_TEMPLATE_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template else None


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
