"""What one causal-LM training example becomes: token ids and a per-token loss mask.

Every data format ends as an `Example`: plain text trains on every token;
instruction and chat examples are first rendered to one string plus the
character spans of the answer (`Rendered`), tokenised ONCE with offsets, and
a token is in the loss when its characters overlap an answer span. Masking
by offsets, not by tokenising prompt and answer apart, keeps the mask right
when the tokenizer merges characters across the boundary.

`causal_lm_rows` pads each example to its own row (unpacked training);
packing several examples per row consumes the same `Example`s.
"""

import dataclasses

import numpy as np

TRAIN_ON = ("completion", "all")


@dataclasses.dataclass(frozen=True)
class Rendered:
    """An example as text: `spans` are the `(start, end)` character ranges of
    the answer (what the loss trains on); None means the whole text."""

    text: str
    spans: tuple = None


@dataclasses.dataclass(frozen=True, eq=False)
class Example:
    """One tokenised training example.

    Attributes:
        token_ids: np.ndarray of int32, `(n,)`. Special tokens included.
        loss_mask: np.ndarray of int8, `(n,)`. 1 where token i is a target of
            the loss (predicted from tokens `< i`); always 0 at i = 0.

    Example:
    >>> ex = Example.of([1, 5, 6, 2], [0, 0, 1, 1])
    >>> len(ex), ex.loss_mask.tolist()
    (4, [0, 0, 1, 1])
    """

    token_ids: np.ndarray
    loss_mask: np.ndarray

    @classmethod
    def of(cls, token_ids, loss_mask):
        ids, mask = np.asarray(token_ids, "int32").reshape(-1), np.asarray(loss_mask, "int8").reshape(-1).copy()
        if ids.shape != mask.shape:
            raise ValueError(f"token_ids has {ids.shape[0]} tokens but loss_mask {mask.shape[0]}.")
        mask[:1] = 0  # nothing predicts the first token
        return cls(ids, mask)

    def __len__(self):
        return int(self.token_ids.shape[0])


def from_token_ids(rows, bos_id=None, eos_id=None):
    """Plain-text examples: `[BOS] ids [EOS]`, every token after BOS in the loss.

    Example:
    >>> [ex.loss_mask.tolist() for ex in from_token_ids([[7, 8]], bos_id=1, eos_id=2)]
    [[0, 1, 1, 1]]
    """
    start, end = ([] if bos_id is None else [bos_id]), ([] if eos_id is None else [eos_id])
    return [Example.of(start + list(r) + end, np.ones(len(start) + len(r) + len(end))) for r in rows]


def encode(tokenizer, rendered, bos_id=None, eos_id=None, train_on="completion"):
    """`Example`s of `Rendered` texts: one tokenisation of each whole text
    (`tokenizer.encode_with_offsets`), the answer mask from token offsets.

    A token counts when its character range overlaps an answer span (a
    zero-width token, when its position lies inside one). `bos_id` is
    prepended (never a target); `eos_id` is appended and trained, so the
    model learns where an answer ends. `train_on="all"` trains on every token.

    Example:
    >>> import backbones
    >>> tok = backbones.Tokenizer.from_preset("gpt2_tiny_en")
    >>> ex = encode(tok, [Rendered("Q: hi A: yes", ((8, 12),))], eos_id=0)[0]
    >>> tok.detokenize([ex.token_ids[ex.loss_mask == 1]], skip_special_tokens=False)
    [' yes<|endoftext|>']
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on={train_on!r} must be one of {TRAIN_ON}.")
    rendered = list(rendered)
    start, end = ([] if bos_id is None else [bos_id]), ([] if eos_id is None else [eos_id])
    out = []
    for item, (ids, offsets) in zip(rendered, tokenizer.encode_with_offsets([r.text for r in rendered])):
        if train_on == "all" or item.spans is None:
            mask = np.ones(len(ids), "int8")
        else:
            mask = answer_mask(offsets, item.spans)
        out.append(Example.of(start + list(ids) + end, np.concatenate([[0] * len(start), mask, [1] * len(end)])))
    return out


def answer_mask(offsets, spans):
    """1 for each token whose `(start, end)` offsets overlap one of `spans`.

    Example:
    >>> answer_mask([(0, 2), (2, 5), (5, 9)], [(4, 9)]).tolist()
    [0, 1, 1]
    """
    offsets = np.asarray(offsets, "int64").reshape(-1, 2)
    mask = np.zeros(len(offsets), bool)
    starts, ends = offsets[:, 0], np.maximum(offsets[:, 1], offsets[:, 0] + 1)  # zero-width: its position
    for lo, hi in spans:
        mask |= (starts < hi) & (ends > lo)
    return mask.astype("int8")


def render_instruction(prompt, answer):
    """An instruction example: the filled prompt template, then the answer (trained).

    Example:
    >>> render_instruction("Q: 2+2?\\nA:", " 4")
    Rendered(text='Q: 2+2?\\nA: 4', spans=((10, 12),))
    """
    return Rendered(prompt + answer, ((len(prompt), len(prompt) + len(answer)),))


def render_chat(tokenizer, messages, chat_template=None, train_roles=("assistant",)):
    """A conversation under the chat template, with each assistant turn as an answer span.

    A turn's span runs from the end of the conversation before it rendered
    with `add_generation_prompt=True` (so the assistant header is prompt) to
    the end of the conversation through it, less trailing whitespace (so the
    end-of-turn token is answer: the model learns to stop). Templates whose earlier text changes
    as turns are added fall back to finding the turn's content in the text.

    Args:
        tokenizer: backbones.Tokenizer. Its `chat_template` and special tokens.
        messages: list of `{"role", "content"}` dicts.
        chat_template: str. Instead of the tokenizer's template.
        train_roles: roles whose turns are answers.

    Example:
    >>> import backbones
    >>> tok = backbones.Tokenizer.from_preset("gpt2_tiny_en")
    >>> t = "{% for m in messages %}{{ m.role }}: {{ m.content }}\\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    >>> r = render_chat(tok, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], t)
    >>> [r.text[a:b] for a, b in r.spans]
    [' Hello']
    """
    def text(turns, prompt=False):
        return tokenizer.apply_chat_template(turns, add_generation_prompt=prompt, chat_template=chat_template)

    full = text(messages)
    spans, cursor = [], 0
    for i, turn in enumerate(messages):
        if turn["role"] not in train_roles:
            continue
        before, through = text(messages[:i], prompt=True), text(messages[:i + 1])
        if full.startswith(before) and full.startswith(through) and len(through) > len(before):
            # Whitespace after the end-of-turn token ("<|im_end|>\n") is the next turn's layout, not the answer.
            lo, hi = len(before), len(before) + len(through[len(before):].rstrip())
        else:
            content = str(turn["content"]).strip()
            lo = full.find(content, cursor)
            if lo < 0 or not content:
                continue  # not rendered (a template that drops it): nothing to train on
            hi = lo + len(content)
        spans.append((lo, hi))
        cursor = hi
    return Rendered(full, tuple(spans))


def causal_lm_rows(examples, sequence_length, pad_id=0):
    """Unpacked rows: each example padded (or truncated) to `sequence_length + 1`
    tokens and shifted into `(inputs, targets, sample_weight)`.

    `sample_weight[:, i]` is the loss mask of target token i + 1 (0 on
    padding). Also returns how many examples were truncated.

    Example:
    >>> (x, y, w), cut = causal_lm_rows(from_token_ids([[7, 8]], bos_id=1, eos_id=2), 4)
    >>> x["token_ids"].tolist(), y.tolist(), w.tolist(), cut
    ([[1, 7, 8, 2]], [[7, 8, 2, 0]], [[1.0, 1.0, 1.0, 0.0]], 0)
    """
    length = sequence_length + 1
    token_ids = np.full((len(examples), length), pad_id, "int32")
    mask = np.zeros((len(examples), length), "int32")
    weight = np.zeros((len(examples), length), "float32")
    truncated = 0
    for i, ex in enumerate(examples):
        n = min(len(ex), length)
        truncated += len(ex) > length
        token_ids[i, :n], mask[i, :n], weight[i, :n] = ex.token_ids[:n], 1, ex.loss_mask[:n]
    inputs = {"token_ids": token_ids[:, :-1], "padding_mask": mask[:, :-1]}
    return (inputs, token_ids[:, 1:], weight[:, 1:]), truncated
