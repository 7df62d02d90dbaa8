"""Training glue around verl 0.9.1: the CPU pre-flight behind `DRY_RUN=1` and the checkpoint export helpers.

`model_train.sh` and `model_export.sh` call `python -m rationanomaly.train.preflight` and
`python -m rationanomaly.train.export`; everything they decide lives here so it can be tested.
"""
