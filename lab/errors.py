"""Showing user mistakes as one paragraph, not a traceback."""

import functools
import sys

from lab.schema import ConfigError


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; the message says how to resume.

    Args:
        message: str. One line: where the run stopped, the command to resume.
        exit_code: int. 128 + the signal number, as a shell reports it.
    """

    def __init__(self, message, exit_code=130):
        super().__init__(message)
        self.exit_code = exit_code


def report_user_errors(main):
    """Decorator for a Hydra task function: in a single run, a `ConfigError` or
    any `BackboneLabError` (bad preset, handle, data, LoRA file) exits with
    status 1 and its message alone. In a sweep the exception propagates, so
    the sweeper records the failed job. Bugs keep their traceback. An
    interruption (Ctrl-C, SIGTERM) prints one line and exits 128 + signal."""

    @functools.wraps(main)
    def wrapper(cfg):
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        try:
            return main(cfg)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: one line, no traceback
            interrupted = isinstance(e, Interrupted)
            print(str(e) if interrupted else "Interrupted before the run started: nothing was recorded.",
                  file=sys.stderr)
            raise SystemExit(e.exit_code if interrupted else 130) from None
        except Exception as e:
            if HydraConfig.get().mode == RunMode.MULTIRUN or not _is_user_error(e):
                raise
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper


def _is_user_error(error):
    if isinstance(error, ConfigError):
        return True
    backbones_errors = sys.modules.get("backbones.errors")
    return backbones_errors is not None and isinstance(error, backbones_errors.BackboneLabError)
