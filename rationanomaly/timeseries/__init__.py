"""Time-series anomaly detection with a dynamic reward: VAE + LSTM-DQN + active learning (DRTA / DRSMT).

The modules follow the pipeline: data (readers, one validated `Series` record) -> synthetic (demo and CI
series in the Yahoo and SMD layouts) -> windows (states) -> vae (intrinsic reward) -> reward (tables,
intrinsic terms, lambda rules) -> labelling (margin queries, label spreading, IsolationForest warm-up)
-> agent (LSTM Q-network, replay, update) -> env (gymnasium environment for sequential evaluation) ->
train (the loop and report.json). `python -m rationanomaly.timeseries --help` lists the commands.

Heavy libraries (torch, scikit-learn, gymnasium) are imported by the modules that need them, never here.
"""

from __future__ import annotations
