"""The input pipeline of tasks: raw strings (or token ids) to a batched, prefetched tf.data.Dataset.

In-memory data (lists, NumPy arrays) is tokenized once, in Rust batches, then
sliced, shuffled and batched by tf.data. A tf.data dataset of strings is
batched if needed and tokenized batch by batch in a parallel `map`, so
tokenization overlaps training. Only this module uses TensorFlow directly
(tf.data works under every Keras backend).
"""

import contextlib
import re

import numpy as np
import tensorflow as tf

from tasks.errors import PIPELINE_ERRORS, WorkerLostError

DEFAULT_BATCH_SIZE = 32


def is_token_dict(x):
    return isinstance(x, dict) and "token_ids" in x


def is_in_memory(x):
    """Strings or token-id dicts held in memory (not a dataset or generator):
    a str, list, tuple, dict with `token_ids`, or an array of strings
    (NumPy, or anything with `__array__`, such as a pandas Series)."""
    if isinstance(x, (str, bytes, list, tuple)) or is_token_dict(x):
        return True
    if isinstance(x, tf.data.Dataset) or not hasattr(x, "__array__"):
        return False
    return np.asarray(x).dtype.kind in "USO"


def make_dataset(x, y, sample_weight, batch_size, shuffle, preprocess, repeat=False):
    """A tf.data.Dataset of `(inputs[, targets[, sample_weight]])` batches, or
    None when `x` is something Keras should handle itself (a generator, a
    PyDataset, a tf.data dataset that is already tokenized).

    `repeat` (in-memory data only) cycles through the data, reshuffled each
    pass: for `fit(..., steps_per_epoch=N)`, whose epochs then need not
    align with passes over the data.

    `preprocess(x, y, sample_weight)` maps a batch of texts (or a token dict)
    and NumPy labels to a tuple of NumPy arrays, without trailing Nones.
    """
    if isinstance(x, tf.data.Dataset):
        return _stream(x, batch_size, preprocess)
    if not is_in_memory(x):
        return None
    data = preprocess(x, _array(y), _array(sample_weight))
    ds = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:
        ds = ds.shuffle(len(tf.nest.flatten(data)[0]), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size or DEFAULT_BATCH_SIZE).prefetch(tf.data.AUTOTUNE)


def split_tail(x, y, sample_weight, fraction):
    """Keras's `validation_split` for in-memory data: the last `fraction`, unshuffled."""
    n = len(x["token_ids"]) if is_token_dict(x) else len(x)
    cut = slice(0, n - int(n * fraction)), slice(n - int(n * fraction), None)
    return tuple(tuple(_take(a, part) for a in (x, y, sample_weight)) for part in cut)


def _take(values, part):
    if values is None:
        return None
    return {k: v[part] for k, v in values.items()} if isinstance(values, dict) else values[part]


def _array(values):
    return None if values is None else np.asarray(values)


def _stream(ds, batch_size, preprocess):
    text = _parts(ds)[0]
    if not (isinstance(text, tf.TensorSpec) and text.dtype == tf.string):
        return None  # already tokenized: Keras reads it as it is
    if text.shape.rank == 0:
        ds = ds.batch(batch_size or DEFAULT_BATCH_SIZE)
    parts = _parts(ds)
    # Probe the output structure once with an empty text and zero labels.
    probe = preprocess([""], *[np.zeros((1,) + tuple(p.shape[1:]), p.dtype.as_numpy_dtype) for p in parts[1:]])
    flat_probe = tf.nest.flatten(probe)
    dtypes = [tf.as_dtype(a.dtype) for a in flat_probe]

    def run(texts, *rest):
        out = tf.nest.flatten(preprocess(texts, *rest))
        return [np.asarray(a, d.as_numpy_dtype) for a, d in zip(out, dtypes)]

    def mapped(*element):
        flat = tf.numpy_function(run, list(element), dtypes, stateful=False)
        for tensor, example in zip(flat, flat_probe):
            tensor.set_shape((None,) + example.shape[1:])
        return tf.nest.pack_sequence_as(probe, flat)

    return ds.map(mapped, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _parts(ds):
    spec = ds.element_spec
    return spec if isinstance(spec, tuple) else (spec,)


@contextlib.contextmanager
def translate_errors():
    """Re-raises our errors that surface wrapped in a TensorFlow error (raised
    inside a tf.data map while Keras reads batches) as their own type."""
    try:
        yield
    except tf.errors.OpError as e:
        lost = _lost_workers(e)
        if lost:
            raise WorkerLostError(
                f"Worker {' and '.join(lost)} of this multi-worker run stopped (crashed, was killed or lost its "
                "host), so the collective ops of every other worker were aborted and the run ends FAILED. Look "
                "at that worker's output for its own error, then restart every worker with the same command: "
                "the run resumes from its last epoch checkpoint.") from None
        match = re.search(rf"\b({'|'.join(PIPELINE_ERRORS)}): ([^\n]+)", str(e))
        if match is None:
            raise
        raise PIPELINE_ERRORS[match.group(1)](match.group(2)) from None


def _lost_workers(error):
    """The tasks a tf.distribute collective names as dead (TensorFlow's coordination service stops
    hearing their heartbeats after about 10 s and aborts every collective), or []."""
    if not isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                              tf.errors.AbortedError)):
        return []
    text = str(error)
    if "ollective" not in text and "heartbeat" not in text:
        return []
    tasks = re.findall(r"/job:\w+/replica:\d+/task:\d+", text.split("unhealthy", 1)[-1])
    tasks = tasks or re.findall(r"/job:\w+/task:\d+", text)
    return list(dict.fromkeys(t.replace("/replica:0", "") for t in tasks)) or ["(unnamed by TensorFlow)"]
