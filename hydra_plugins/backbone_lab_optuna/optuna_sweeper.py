"""A small Hydra sweeper on current Optuna (ask/tell).

    python train.py -m hydra/sweeper=optuna hydra.sweeper.n_trials=20 \
        'optimizer.learning_rate=tag(log, interval(1e-4, 1e-2))' 'lora.rank=choice(2,4,8)'

Sweep overrides on the command line (or in `hydra.sweeper.params`) define the
search space: `choice(...)` and `range(...)` are categorical, `interval(a, b)`
is a float (an int if both ends are ints; log-uniform with `tag(log, ...)`).
Other overrides are passed to every trial. Each trial is one job returning
`train.py`'s metric; the direction defaults to `task.metric_mode`.
Written for this project because hydra-optuna-sweeper 1.3 pins optuna < 3
and its database storage breaks under SQLAlchemy 2.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.backbone_lab_optuna.optuna_sweeper.OptunaSweeper"
    direction: Optional[str] = None  # maximize | minimize; null: from task.metric_mode
    n_trials: int = 20
    n_jobs: int = 1  # trials launched together (parallel with a parallel launcher)
    seed: Optional[int] = None
    storage: Optional[str] = None  # e.g. sqlite:///optuna.db to persist and resume a study
    study_name: Optional[str] = None
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="backbone_lab")


class OptunaSweeper(Sweeper):
    def __init__(self, direction, n_trials, n_jobs, seed, storage, study_name, params):
        self.direction, self.n_trials, self.n_jobs = direction, n_trials, n_jobs
        self.seed, self.storage, self.study_name, self.params = seed, storage, study_name, dict(params or {})

    def setup(self, *, hydra_context, task_function, config):
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _search_space(self, arguments):
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        space, fixed = {}, []
        for override in overrides:
            if not override.is_sweep_override():
                fixed.append(override.input_line)
            elif override.is_interval_sweep():
                interval = override.value()
                space[override.get_key_element()] = ("interval", interval.start, interval.end, "log" in interval.tags)
            else:
                space[override.get_key_element()] = ("choice", list(override.sweep_string_iterator()))
        if not space:
            raise ValueError("hydra/sweeper=optuna needs a search space: e.g. 'lora.rank=choice(2,4,8)' "
                             "or 'optimizer.learning_rate=tag(log, interval(1e-4, 1e-2))'.")
        return space, fixed

    @staticmethod
    def _suggest(trial, name, spec):
        if spec[0] == "choice":
            return trial.suggest_categorical(name, spec[1])
        _, low, high, log_scale = spec
        if float(low).is_integer() and float(high).is_integer() and isinstance(low, int) and isinstance(high, int):
            return trial.suggest_int(name, low, high, log=log_scale)
        return trial.suggest_float(name, float(low), float(high), log=log_scale)

    def sweep(self, arguments):
        import optuna

        space, fixed = self._search_space(arguments)
        direction = self.direction or ("maximize" if self.config.task.metric_mode == "max" else "minimize")
        study = optuna.create_study(direction=direction, storage=self.storage, study_name=self.study_name,
                                    sampler=optuna.samplers.TPESampler(seed=self.seed), load_if_exists=True)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        job_index = 0
        while job_index < self.n_trials:
            trials = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - job_index))]
            batch = [tuple(fixed + [f"{name}={self._suggest(t, name, spec)}" for name, spec in space.items()])
                     for t in trials]
            self.validate_batch_is_legal(batch)
            for trial, result in zip(trials, self.launcher.launch(batch, initial_job_idx=job_index)):
                try:
                    study.tell(trial, float(result.return_value))
                except Exception as e:  # a failed job is a failed trial, not a failed search
                    log.warning("Trial %d failed: %s", trial.number, e)
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            job_index += len(trials)
        best = {"best_value": study.best_value, "best_params": study.best_params, "direction": direction}
        OmegaConf.save(OmegaConf.create(best), sweep_dir / "optimization_results.yaml")
        log.info("Best %s: %s with %s", direction, study.best_value, study.best_params)
        return best
