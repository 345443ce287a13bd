"""Showing user mistakes as one paragraph, not a traceback."""

import functools
import sys

from lab.schema import ConfigError


def report_user_errors(main):
    """Decorator for a Hydra task function: in a single run, a `ConfigError` or
    any `BackboneLabError` (bad preset, handle, data, LoRA file) exits with
    status 1 and its message alone. In a sweep the exception propagates, so
    the sweeper records the failed job. Bugs keep their traceback."""

    @functools.wraps(main)
    def wrapper(cfg):
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        try:
            return main(cfg)
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
