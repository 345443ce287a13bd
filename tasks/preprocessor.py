"""`Preprocessor`: strings to packed token ids, a padding mask and (encoders) segment ids."""

import warnings

import numpy as np

from backbones.chat_template import normalize_messages
from tasks import examples, packing
from tasks.errors import MissingTokenizerError, TaskConfigError, TaskInputError, TruncationWarning

# Texts per call of the Rust batch encoder: bounds the memory of the
# intermediate `Encoding` objects without giving up its parallelism.
ENCODE_CHUNK = 8192


class Preprocessor:
    """Tokenizes texts in batches and packs them to a fixed sequence length.

    Packing depends on what the task needs (right padding everywhere):

    - `__call__` (classification, encoding): encoders get
      `[CLS] tokens [SEP]` plus `segment_ids` (zeros); decoders get
      `tokens [EOS]` (`add_end_token=True`, when the tokenizer has an eos).
    - `causal_lm`: `[BOS] tokens [EOS]`, packed to `sequence_length + 1`
      and shifted into inputs, next-token targets and a sample weight that
      is 0 on padding. A truncated text loses its `[EOS]` (it does not end there).
    - `prompts`: `[BOS] tokens`, unpadded, for `CausalLM.generate`
      (`chat_prompts`: conversations under the chat template).

    Padding uses the tokenizer's pad token, or id 0 when it has none (padded
    positions are masked, so the id does not matter). An empty string packs
    to its special tokens only, e.g. `[EOS]` for a GPT-2 classifier. Texts
    longer than the sequence length are truncated at the end (special tokens
    kept) and a `TruncationWarning` says how many, once per preprocessor;
    `truncated_count` keeps the running total.

    Args:
        tokenizer: backbones.Tokenizer. The preset's tokenizer.
        sequence_length: int. Length of every packed sequence.
        is_encoder: bool. Pack for a bidirectional encoder (BERT).
        add_end_token: bool. Decoders: append eos for classification, so the
            last real token (the one pooled) is the same token for every text.
        chat_template: str. A Jinja chat template for chat data and
            `generate(..., chat=True)`, instead of the tokenizer's own; saved
            in the task's preprocessor config, so a trained model keeps it.

    Example:
    >>> import backbones, tasks
    >>> tokenizer = backbones.Tokenizer.from_preset("gpt2_tiny_en")
    >>> pre = tasks.Preprocessor(tokenizer, sequence_length=8)
    >>> x = pre(["the movie was great", ""])
    >>> x["padding_mask"].tolist()
    [[1, 1, 1, 1, 1, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]]
    >>> x, y, weight = pre.causal_lm(["the movie"])
    >>> x["token_ids"].shape, y.shape, weight.tolist()
    ((1, 8), (1, 8), [[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    """

    def __init__(self, tokenizer, sequence_length=128, is_encoder=False, add_end_token=True, chat_template=None):
        if tokenizer is None:
            raise MissingTokenizerError(
                "Preprocessor got tokenizer=None. Load a preset that has a tokenizer "
                "(tokenizer.json), or pass backbones.Tokenizer.from_preset(<preset>)."
            )
        if isinstance(sequence_length, bool) or not isinstance(sequence_length, int) or sequence_length < 2:
            raise TaskConfigError(f"sequence_length must be an integer >= 2, got {sequence_length!r}.")
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.is_encoder = bool(is_encoder)
        self.add_end_token = bool(add_end_token)
        self.chat_template = chat_template
        self.truncated_count = 0
        self._warned = False
        role = tokenizer.special_token_id
        pad = role("pad")
        self.pad_id = 0 if pad is None else pad
        self.bos_id, self.eos_id = role("bos"), role("eos")
        if self.is_encoder:
            self.start_id = role("cls") if role("cls") is not None else self.bos_id
            self.end_id = role("sep") if role("sep") is not None else self.eos_id
            if self.start_id is None or self.end_id is None:
                raise TaskConfigError(
                    "An encoder preprocessor needs cls and sep (or bos and eos) special "
                    f"tokens; this tokenizer has {sorted(tokenizer.special_tokens)}. Set them "
                    "in the preset's tokenizer_config.json ('special_tokens')."
                )
        else:
            self.start_id = None
            self.end_id = self.eos_id if self.add_end_token else None

    @property
    def feature_names(self):
        """Keys of the packed inputs, in the order of the backbone's inputs."""
        names = ("token_ids", "padding_mask")
        return names + ("segment_ids",) if self.is_encoder else names

    def tokenize(self, texts):
        """Token ids of each text (no special tokens), encoded in Rust batches."""
        texts = as_text_list(texts)
        ids = []
        for start in range(0, len(texts), ENCODE_CHUNK):
            ids.extend(self.tokenizer(texts[start:start + ENCODE_CHUNK]))
        return ids

    def __call__(self, texts):
        """Packed inputs for classification / encoding: a dict of int32 arrays."""
        ids = self.tokenize(texts)
        start = [] if self.start_id is None else [self.start_id]
        end = [] if self.end_id is None else [self.end_id]
        room = self.sequence_length - len(start) - len(end)
        if room < 0:
            raise TaskConfigError(f"sequence_length={self.sequence_length} leaves no room for the special tokens.")
        self._note_truncation(sum(len(x) > room for x in ids), len(ids))
        token_ids, mask = self._pad([start + x[:room] + end for x in ids], self.sequence_length)
        features = {"token_ids": token_ids, "padding_mask": mask}
        if self.is_encoder:
            features["segment_ids"] = np.zeros_like(token_ids)
        return features

    def causal_lm(self, texts):
        """`(inputs, targets, sample_weight)` for next-token prediction.

        Packs `[BOS] tokens [EOS]` to `sequence_length + 1` and shifts by one:
        `targets[:, i]` is the token after `inputs["token_ids"][:, i]`, and
        `sample_weight` is 1 on real targets, 0 on padding.
        """
        return self.causal_lm_examples(examples.from_token_ids(self.tokenize(texts), self.bos_id, self.eos_id))

    def causal_lm_examples(self, items):
        """`(inputs, targets, sample_weight)` of `tasks.examples.Example`s, one
        per row: the weight is each target token's loss mask (0 on padding)."""
        arrays, truncated = examples.causal_lm_rows(items, self.sequence_length, self.pad_id)
        self._note_truncation(truncated, len(items))
        return arrays

    def packed_causal_lm(self, texts):
        """`((inputs, targets, sample_weight), stats)` with several texts per row.

        Each text is `[BOS] tokens [EOS]` as in `causal_lm` (cut at
        `sequence_length + 1` ids); rows are filled by best-fit decreasing
        (`tasks.packing`) and `inputs` gains `segment_ids` (1, 2, ... per text
        in its row, 0 on padding) for `CausalLM(..., packing=True)`.
        """
        return self.packed_causal_lm_examples(examples.from_token_ids(self.tokenize(texts), self.bos_id, self.eos_id))

    def packed_causal_lm_examples(self, items):
        """`packed_causal_lm` of `tasks.examples.Example`s: the weight is each
        target token's loss mask, as in `causal_lm_examples`."""
        self._note_truncation(sum(len(ex) > self.sequence_length + 1 for ex in items), len(items))
        return packing.pack([ex.token_ids for ex in items], self.sequence_length, self.pad_id,
                            weights=[ex.loss_mask for ex in items])

    def prompts(self, texts):
        """Unpadded, untruncated `[BOS] tokens` of each prompt (for generation)."""
        start = [] if self.bos_id is None else [self.bos_id]
        return [start + x for x in self.tokenize(texts)]

    def chat_prompts(self, conversations):
        """Unpadded token ids of each conversation under the tokenizer's chat
        template with its generation prompt (no BOS added: the template has its own).
        A str is one user message; sharegpt turns are accepted."""
        texts = [self.tokenizer.apply_chat_template(
            normalize_messages([{"role": "user", "content": c}] if isinstance(c, str) else c, f"prompt {i}"),
            add_generation_prompt=True, chat_template=self.chat_template) for i, c in enumerate(conversations)]
        return [list(ids) for ids in self.tokenizer(texts)]

    def _pad(self, rows, length):
        token_ids = np.full((len(rows), length), self.pad_id, dtype="int32")
        mask = np.zeros((len(rows), length), dtype="int32")
        for i, row in enumerate(rows):
            token_ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return token_ids, mask

    def _note_truncation(self, count, total):
        self.truncated_count += int(count)
        if count and not self._warned:
            self._warned = True
            warnings.warn(
                f"{count} of {total} texts were longer than sequence_length="
                f"{self.sequence_length} tokens (with special tokens) and were truncated "
                "at the end. Raise sequence_length to keep whole texts. This warning is "
                "shown once per preprocessor; `preprocessor.truncated_count` keeps the total.",
                TruncationWarning, stacklevel=3,
            )

    def get_config(self):
        config = {"sequence_length": self.sequence_length, "is_encoder": self.is_encoder,
                  "add_end_token": self.add_end_token}
        if self.chat_template:
            config["chat_template"] = self.chat_template
        return config


def as_text_list(texts):
    """A list of `str` from a str, bytes, list, tuple or NumPy array of them.

    Raises `TaskInputError` naming the first entry that is not text.
    """
    if isinstance(texts, (str, bytes)):
        texts = [texts]
    texts = list(np.asarray(texts, dtype=object).reshape(-1)) if isinstance(texts, np.ndarray) else list(texts)
    out = []
    for i, text in enumerate(texts):
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise TaskInputError(
                f"Text at index {i} is {text!r} ({type(text).__name__}), not a string. Pass "
                "strings (empty strings are allowed), or already tokenized inputs as a dict "
                "with 'token_ids' and 'padding_mask'."
            )
        out.append(text)
    return out
