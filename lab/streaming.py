"""Training data larger than memory: files read in chunks, a seeded shuffle buffer, resumable positions.

`ExampleStream` yields the texts of a JSONL, CSV/TSV or Parquet file (or a
Hugging Face dataset in `datasets` streaming mode) one epoch at a time,
holding at most one chunk of the file plus the shuffle buffer in memory:

- JSONL is read line by line; CSV/TSV with pandas in chunks of
  `chunk_rows` rows; Parquet with pyarrow record batches of `chunk_rows`.
- Shuffling is a buffer of `buffer_size` examples (as tf.data's
  `shuffle`): each new example replaces a random one of the buffer, which is
  yielded. Its generator is seeded by `(seed, epoch)`, so epoch k's order
  depends only on the seed and k, not on what ran before.
- Resuming: the order is a pure function of `(seed, epoch)`, so a position
  is just `(epoch, examples already consumed in it)`. `epoch(k, skip=n)`
  replays the reading and the buffer without tokenising anything and starts
  at example n: the same remaining examples in the same order as an
  uninterrupted run. Replaying costs one read of the skipped part of the file
  (no tokenisation, no training), instead of saving the buffer.

Example:
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
>>> _ = path.write_text("".join(f'{{"text": "t{i}"}}\\n' for i in range(6)))
>>> stream = ExampleStream(path, buffer_size=3, seed=0, chunk_rows=2)
>>> full = list(stream.epoch(0))
>>> sorted(full) == [f"t{i}" for i in range(6)], list(stream.epoch(0, skip=4)) == full[4:]
(True, True)
"""

from pathlib import Path

import numpy as np

from lab import data
from lab.schema import ConfigError

CHUNK_ROWS = 10_000  # rows per read of a CSV/Parquet file: a few MB of text
BUFFER_SIZE = 10_000  # examples in the shuffle buffer


def file_format(path, fmt=None):
    """`fmt`, or the type of `path` from its suffix (`lab.data.file_format`)."""
    return data.file_format(Path(path), {"file_format": fmt})


def iter_records(path, fmt=None, chunk_rows=CHUNK_ROWS):
    """Yields the records (dicts) of a data file, reading `chunk_rows` rows at a time."""
    fmt = file_format(path, fmt)
    if fmt in ("jsonl", "json"):
        yield from data.read_jsonl(path)  # line by line
    elif fmt in ("csv", "tsv"):
        import pandas as pd

        with pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", chunksize=chunk_rows) as chunks:
            for frame in chunks:
                yield from frame.to_dict("records")
    else:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield from batch.to_pylist()


def iter_huggingface(name, split):
    """Yields the records of a Hugging Face dataset split in `datasets`' streaming mode."""
    data.require_datasets()
    import datasets

    try:
        yield from datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:  # offline and not cached, unknown name or split...
        raise ConfigError(f"Could not stream Hugging Face dataset {name!r} split {split!r}: {e}.") from e


def shuffle_buffer(items, buffer_size, seed):
    """Yields `items` in an order shuffled through a buffer of `buffer_size`,
    deterministic for a given `seed` (an int or a list of ints).

    Example:
    >>> list(shuffle_buffer(range(8), 4, seed=[1, 0])) == list(shuffle_buffer(range(8), 4, seed=[1, 0]))
    True
    >>> sorted(shuffle_buffer(range(8), 4, seed=3))
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    rng = np.random.default_rng(seed)
    buffer = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        i = int(rng.integers(buffer_size))
        yield buffer[i]
        buffer[i] = item
    for i in rng.permutation(len(buffer)):
        yield buffer[i]


class ExampleStream:
    """The texts of a file (or a Hugging Face split), streamed epoch by epoch.

    Args:
        path: str or Path. The data file; or `hf://name[:split]` for a
            Hugging Face dataset read in `datasets` streaming mode.
        text_column: str. Column holding the text.
        fmt: str. `jsonl`, `csv`, `tsv`, `parquet`; None: from the suffix.
        buffer_size: int. Shuffle buffer, in examples; 0: file order.
        seed: int. The run's seed; epoch k shuffles with `(seed, k)`.
        chunk_rows: int. Rows per read of a CSV / Parquet file.
    """

    def __init__(self, path, text_column="text", fmt=None, buffer_size=BUFFER_SIZE, seed=0, chunk_rows=CHUNK_ROWS):
        self.path, self.text_column, self.fmt = str(path), text_column, fmt
        self.buffer_size, self.seed, self.chunk_rows = buffer_size, seed, chunk_rows
        if not self.path.startswith("hf://"):
            file_format(self.path, fmt)  # an unknown format fails now, not at the first batch

    def _texts(self):
        if self.path.startswith("hf://"):
            name, _, split = self.path[len("hf://"):].partition(":")
            records = iter_huggingface(name, split or "train")
        else:
            records = iter_records(self.path, self.fmt, self.chunk_rows)
        for number, record in enumerate(records):
            if self.text_column not in record:
                raise ConfigError(f"data.text_column={self.text_column!r} is not in record {number} of "
                                  f"{self.path}; its keys: {sorted(record)}.")
            text = record[self.text_column]
            yield "" if text is None or (isinstance(text, float) and np.isnan(text)) else str(text)

    def epoch(self, epoch, skip=0):
        """Yields the texts of epoch `epoch`, starting after the first `skip` (a resume)."""
        texts = self._texts()
        if self.buffer_size:
            texts = shuffle_buffer(texts, self.buffer_size, [self.seed, epoch])
        for i, text in enumerate(texts):
            if i >= skip:
                yield text

    def count(self):
        """Examples per epoch (Parquet: from the file's metadata; else one read of the file)."""
        if not self.path.startswith("hf://") and file_format(self.path, self.fmt) == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.path).metadata.num_rows
        return sum(1 for _ in self._texts())


class StreamBatches:
    """Fixed-size batches of an `ExampleStream`, tokenised batch by batch, for
    `fit(..., steps_per_epoch=...)`; `position` is where a resume starts.

    Sequential by design: batch i of an epoch is the i-th slice of that
    epoch's stream. Wrap it with `as_py_dataset` for Keras.

    Args:
        stream: ExampleStream. The examples.
        to_arrays: callable. A list of texts to a batch of arrays (e.g.
            `task.preprocessor.causal_lm`).
        batch_size: int. Examples per batch (the last partial one is dropped).
        epoch, skip: int. Where to start: a checkpoint's `position`.

    Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.csv"
    >>> _ = path.write_text("text\\n" + "".join(f"t{i}\\n" for i in range(7)))
    >>> batches = StreamBatches(ExampleStream(path, seed=0, buffer_size=0), list, batch_size=3)
    >>> batches.next_batch(), batches.position
    (['t0', 't1', 't2'], {'epoch': 0, 'examples': 3})
    """

    def __init__(self, stream, to_arrays, batch_size, epoch=0, skip=0):
        self.stream, self.to_arrays, self.batch_size = stream, to_arrays, batch_size
        self.epoch, self.examples = epoch, skip
        self._texts = stream.epoch(epoch, skip)

    @property
    def position(self):
        """`{"epoch", "examples"}`: the epoch and the examples of it already batched."""
        return {"epoch": self.epoch, "examples": self.examples}

    def next_batch(self):
        """The next batch of this epoch; `StopIteration` at its end."""
        texts = [t for _, t in zip(range(self.batch_size), self._texts)]
        if len(texts) < self.batch_size:
            raise StopIteration
        self.examples += len(texts)
        return self.to_arrays(texts)

    def next_epoch(self):
        self.epoch, self.examples = self.epoch + 1, 0
        self._texts = self.stream.epoch(self.epoch)
