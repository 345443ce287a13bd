"""Hydra sweeper plugin: Bayesian search with current Optuna (`hydra/sweeper=optuna`)."""
