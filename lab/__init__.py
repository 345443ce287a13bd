"""The experiment machinery behind `train.py`: config schema and checks, data,
seeding, MLflow tracking, checkpoints and resume, sweeps."""
