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

import keras
import numpy as np

from lab import data
from lab.schema import ConfigError

CHUNK_ROWS = 10_000  # rows per read of a CSV/Parquet file: a few MB of text
BUFFER_SIZE = 10_000  # examples in the shuffle buffer
# data.streaming=null streams a training file above this size. Tokenised in memory, a file costs
# about 12 bytes per slot (ids, mask, targets, weights) times rows x sequence_length: far more than
# the file itself for short examples, so the threshold is low.
STREAMING_BYTES = 256 * 2**20
VALIDATION_CAP = 5_000  # validation examples kept in memory when streaming, unless data.max_validation_samples


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


def held_out(indices, fraction, seed):
    """Boolean: which example indices are validation, by a hash of (seed, index).

    Per example, not per chunk or order: the same examples are held out
    whatever the chunk size, the buffer or the epoch.

    Example:
    >>> mask = held_out(np.arange(10_000), 0.1, seed=42)
    >>> round(float(mask.mean()), 2), bool((mask == held_out(np.arange(10_000), 0.1, seed=42)).all())
    (0.1, True)
    """
    with np.errstate(over="ignore"):  # wrap-around is the point: a splitmix64 step
        h = np.asarray(indices, "uint64") + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h = h ^ (h >> np.uint64(31))
    return (h >> np.uint64(11)).astype("float64") / float(1 << 53) < fraction


def _default_cfg():
    from omegaconf import OmegaConf

    from lab.schema import DataConfig

    return OmegaConf.structured(DataConfig(label_column=None))


class ExampleStream:
    """The examples of a file (or a Hugging Face split), streamed epoch by epoch.

    An example is what `lab.data.load` makes of a record for `data.format`
    (a text, an instruction's prompt and answer, a conversation).

    Args:
        path: str or Path. The data file; or `hf://name[:split]` for a
            Hugging Face dataset read in `datasets` streaming mode.
        data_cfg: the `data` config node (columns, format, file type);
            None: plain text in a `text` column.
        buffer_size: int. Shuffle buffer, in examples; 0: file order.
        seed: int. The run's seed; epoch k shuffles with `(seed, k)`.
        chunk_rows: int. Rows read (and converted) at a time.
        holdout: float. The fraction of examples held out (`held_out`).
        part: str. `"train"` (all but the held-out ones) or `"validation"`.
        limit: int. At most this many examples (the first, in file order).
    """

    def __init__(self, path, data_cfg=None, buffer_size=BUFFER_SIZE, seed=0, chunk_rows=CHUNK_ROWS,
                 holdout=0.0, part="train", limit=None):
        self.path, self.cfg = str(path), data_cfg if data_cfg is not None else _default_cfg()
        self.buffer_size, self.seed, self.chunk_rows = buffer_size, seed, chunk_rows
        self.holdout, self.part, self.limit = holdout, part, limit
        self.format = data.example_format(self.cfg)
        self.label_names = None  # as `data.Split`: language modelling has no labels
        if not self.path.startswith("hf://"):
            file_format(self.path, self.cfg.get("file_format"))  # an unknown type fails now, not at the first batch

    def _records(self):
        if self.path.startswith("hf://"):
            name, _, split = self.path[len("hf://"):].partition(":")
            return iter_huggingface(name, split or "train")
        return iter_records(self.path, self.cfg.get("file_format"), self.chunk_rows)

    def _examples(self):
        """This part's examples in file order, converted a chunk at a time."""
        examples = self._all_examples()
        return examples if self.limit is None else (e for _, e in zip(range(self.limit), examples))

    def _all_examples(self):
        records, start = self._records(), 0
        while True:
            chunk = [r for _, r in zip(range(self.chunk_rows), records)]
            if not chunk:
                return
            table = {k: [r.get(k) for r in chunk] for k in chunk[0]}
            split = data._to_split(table, self.cfg, f"{self.path}, rows {start}..{start + len(chunk) - 1}")
            keep = held_out(np.arange(start, start + len(chunk)), self.holdout, self.seed)
            if self.part == "train":
                keep = ~keep
            for example, kept in zip(split.texts, keep):
                if kept:
                    yield example
            start += len(chunk)

    def epoch(self, epoch, skip=0):
        """Yields the examples of epoch `epoch`, starting after the first `skip` (a resume)."""
        examples = self._examples()
        if self.buffer_size:
            examples = shuffle_buffer(examples, self.buffer_size, [self.seed, epoch])
        for i, example in enumerate(examples):
            if i >= skip:
                yield example

    def count(self):
        """Examples per epoch: one read of the file, nothing tokenised."""
        return sum(1 for _ in self._examples())

    def split(self):
        """This part's examples (file order) as an in-memory `lab.data.Split`."""
        return data.Split(list(self._examples()), format=self.format)


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
    >>> batches = StreamBatches(ExampleStream(path, buffer_size=0), list, batch_size=3)
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


class KerasStream(keras.utils.PyDataset):
    """`StreamBatches` as a Keras dataset of `steps_per_epoch` batches per epoch.

    Keras reads batches in order (no shuffle, one worker); the batches last
    served are kept, so Keras peeking at the first batches for its input specs
    (two in Keras 3.15, `NUM_BATCHES_FOR_TENSOR_SPEC`; one more in
    `tasks.task.build_training_state`) consumes none. The stream runs on
    from one pass over the data into the next when a pass ends (a pass has
    `steps_per_epoch` full batches), so a resumed Keras epoch may span two.
    """

    KEEP = 4  # batches kept for re-reads: more than Keras's peeks

    def __init__(self, batches, steps_per_epoch):
        super().__init__()
        self.batches, self.steps_per_epoch = batches, steps_per_epoch
        self._served, self._next = {}, 0  # this epoch's last KEEP batches by index; the next index to read

    @property
    def num_batches(self):
        return self.steps_per_epoch

    def __len__(self):
        return self.steps_per_epoch

    def skip_to(self, step):
        """Resumes after `step` batches in all (see `training.EpochBatches.skip_to`):
        the stream restarts at that batch of its epoch, replayed without tokenising."""
        epoch, batch = divmod(step, self.steps_per_epoch)
        self.batches = StreamBatches(self.batches.stream, self.batches.to_arrays, self.batches.batch_size,
                                     epoch, batch * self.batches.batch_size)
        self._served, self._next = {}, 0

    def __getitem__(self, index):
        if index < self._next - len(self._served):
            raise IndexError(f"Batch {index} of a stream was requested after batch {self._next - 1}: "
                             "streamed data is read in order only.")
        while index >= self._next:
            try:
                batch = self.batches.next_batch()
            except StopIteration:  # the end of a pass: on into the next (a resumed epoch spans two)
                self.batches.next_epoch()
                batch = self.batches.next_batch()
            self._served[self._next] = batch
            self._served.pop(self._next - self.KEEP, None)
            self._next += 1
        return self._served[index]

    def on_epoch_end(self):
        self._served, self._next = {}, 0


def enabled(cfg):
    """Whether to stream the training data: `data.streaming`, or (null) when
    the training file is larger than `STREAMING_BYTES`."""
    if cfg.get("streaming") is not None:
        return bool(cfg.streaming)
    if cfg.source == "huggingface" or data.example_format(cfg) == "classification":
        return False  # labels are mapped over the whole file: not streamed
    return any(path.stat().st_size > STREAMING_BYTES for key, path in data.files(cfg) if key != "data.validation_path")


def load(cfg, seed):
    """`(train, validation)`: an `ExampleStream` of the training examples and
    an in-memory validation `Split` (`data.validation_path`, the Hugging Face
    `data.validation_split_name`, or `data.validation_fraction` of the examples
    held out by hash), capped at `data.max_validation_samples` or
    `VALIDATION_CAP`."""
    if cfg.source == "huggingface":
        path = f"hf://{cfg.name}:{cfg.split}"
        separate = f"hf://{cfg.name}:{cfg.validation_split_name}" if cfg.validation_split_name else None
    else:
        paths = dict(data.files(cfg))
        path, separate = paths["data.path" if cfg.source == "local" else "data.name"], paths.get("data.validation_path")
    holdout = 0.0 if separate else cfg.validation_fraction
    train = ExampleStream(path, cfg, seed=seed, holdout=holdout, limit=cfg.max_train_samples)
    cap = cfg.max_validation_samples or VALIDATION_CAP
    validation = ExampleStream(separate or path, cfg, seed=seed, holdout=1.0 if separate else holdout,
                               part="validation", limit=cap).split()
    if len(validation) == 0:
        raise ConfigError("The validation split is empty: raise data.validation_fraction or set data.validation_path.")
    return train, validation
