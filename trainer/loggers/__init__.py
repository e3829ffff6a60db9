"""Where a run's numbers go: one small protocol (base.py) and one module per backend.

tensorboard.py (scalars, confusion pictures, HParams via hparams.py), csv.py (metrics.csv),
mlflow.py (an MLflow tracking store). Each is chosen in the ``logger`` config group
(configs/logger/); the loop sees only the protocol.
"""
