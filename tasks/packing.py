"""Packing causal-LM examples several to a row (`CausalLM(..., packing=True)`).

An example of n tokens (`[BOS] tokens [EOS]`) trains n - 1 next-token
predictions, so it takes n - 1 slots of a row: inputs `ids[:-1]`, targets
`ids[1:]`, exactly what it gets alone in an unpadded row. Rows are filled by
best-fit decreasing: examples longest first, each into the open row with the
least room that still holds it (a new row when none does). Best fit rather
than first fit because it needs no scan of every open row (rows are bucketed
by remaining room) and packs at least as tightly in practice. Keras-free:
NumPy only.
"""

import bisect
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class PackingStats:
    """What packing saved. `waste` is the padded fraction of all slots.

    Attributes:
        examples: int. Examples packed.
        rows: int. Rows after packing (unpacked: one row per example).
        tokens: int. Trained slots (real input tokens), the same both ways.
        sequence_length: int. Slots per row.
    """

    examples: int
    rows: int
    tokens: int
    sequence_length: int

    @property
    def waste(self):
        return 1.0 - self.tokens / max(1, self.rows * self.sequence_length)

    @property
    def unpacked_waste(self):
        return 1.0 - self.tokens / max(1, self.examples * self.sequence_length)


def best_fit_decreasing(lengths, capacity):
    """Rows of example indices: each row's lengths sum to at most `capacity`.

    Deterministic: ties keep the examples' order. Every length must be in
    `1..capacity`.

    Example:
    >>> best_fit_decreasing([5, 3, 2, 4, 6], capacity=10)
    [[4, 3], [0, 1, 2]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties by index
    rows, room_of = [], []
    open_rooms, by_room = [], {}  # sorted distinct rooms of open rows; room -> row ids (oldest first)
    for i in order:
        length = lengths[i]
        if not 0 < length <= capacity:
            raise ValueError(f"Example {i} has length {length}, outside 1..{capacity}.")
        k = bisect.bisect_left(open_rooms, length)
        if k < len(open_rooms):
            room = open_rooms[k]
            row = by_room[room].pop(0)
            if not by_room[room]:
                del by_room[room]
                open_rooms.pop(k)
        else:
            row, room = len(rows), capacity
            rows.append([])
        rows[row].append(i)
        left = room - length
        if left:
            if left not in by_room:
                bisect.insort(open_rooms, left)
                by_room[left] = []
            by_room[left].append(row)
    return rows


def pack(examples, sequence_length, pad_id=0, weights=None):
    """Packs token-id lists into `(inputs, targets, sample_weight), stats`.

    Args:
        examples: list of lists of int. Each example's full ids, special
            tokens included (`[BOS] tokens [EOS]`); longer than
            `sequence_length + 1` ids is cut there (as unpacked rows are).
        sequence_length: int. Slots per row.
        pad_id: int. Id of padding slots.
        weights: list of lists of float, or None. Per-id loss weights (the
            weight of predicting that id); None: 1 everywhere. The first id's
            weight is unused (nothing predicts it).

    Returns:
        `inputs` (`token_ids`, `padding_mask`, `segment_ids`: 1, 2, ... per
        example in its row, 0 on padding), `targets` and `sample_weight`
        `(rows, sequence_length)`, and a `PackingStats`.

    Example:
    >>> (x, y, w), stats = pack([[1, 5, 6, 2], [1, 7, 2]], sequence_length=6)
    >>> x["token_ids"].tolist(), x["segment_ids"].tolist()
    ([[1, 5, 6, 1, 7, 0]], [[1, 1, 1, 2, 2, 0]])
    >>> y.tolist(), w.tolist()
    ([[5, 6, 2, 7, 2, 0]], [[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    >>> stats.rows, round(stats.waste, 3), round(stats.unpacked_waste, 3)
    (1, 0.167, 0.583)
    """
    cut = [list(ids[:sequence_length + 1]) for ids in examples]
    kept = [i for i, ids in enumerate(cut) if len(ids) >= 2]  # a lone token predicts nothing
    rows = best_fit_decreasing([len(cut[i]) - 1 for i in kept], sequence_length)
    shape = (len(rows), sequence_length)
    token_ids, targets = np.full(shape, pad_id, "int32"), np.full(shape, pad_id, "int32")
    segment_ids, sample_weight = np.zeros(shape, "int32"), np.zeros(shape, "float32")
    for r, row in enumerate(rows):
        start = 0
        for segment, k in enumerate(row, 1):
            ids = cut[kept[k]]
            end = start + len(ids) - 1
            token_ids[r, start:end], targets[r, start:end] = ids[:-1], ids[1:]
            segment_ids[r, start:end] = segment
            weight = 1.0 if weights is None else weights[kept[k]][1:len(ids)]
            sample_weight[r, start:end] = weight
            start = end
    inputs = {"token_ids": token_ids, "padding_mask": (segment_ids > 0).astype("int32"), "segment_ids": segment_ids}
    stats = PackingStats(len(kept), len(rows), int((segment_ids > 0).sum()), sequence_length)
    return (inputs, targets, sample_weight), stats
