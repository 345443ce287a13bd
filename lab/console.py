"""A quiet terminal: TensorFlow's start-up logs and MLflow's store INFO lines
hidden, unless the user asks for them.

On a CPU machine, importing TensorFlow prints about ten lines to stderr
before Python can configure anything (the oneDNN notice and the CUDA-driver
probe, twice; `TF_CPP_MIN_LOG_LEVEL` does not reach them: absl writes them
before its logging is initialised), and the first device query logs
`failed call to cuInit`. Both go to a temporary file instead, which is
replayed if the import fails.
"""

import contextlib
import logging
import os
import sys
import tempfile
import warnings


def quiet_start(verbose=False):
    """Imports TensorFlow silently, hides MLflow's store INFO lines, and
    prints Python warnings on one line each.

    Call before anything imports TensorFlow or keras. With `verbose`
    (`hydra.verbose=true` or `HYDRA_FULL_ERROR=1`), only sets the backend.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if verbose or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING logs once absl is up
    warnings.formatwarning = _one_line
    quiet_store()
    with _stderr_captured():
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe logs here, once


def quiet_store():
    """Hides MLflow's INFO lines on creating a sqlite store ("Creating initial MLflow database tables...")."""
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _one_line(message, category, filename, lineno, line=None):
    """A warning as one line, without the source line Python prints under it."""
    return f"{category.__name__}: {message}\n"


@contextlib.contextmanager
def _stderr_captured():
    """Sends file descriptor 2 (C++ logs too) to a temporary file; on an
    exception, writes what was captured back to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
