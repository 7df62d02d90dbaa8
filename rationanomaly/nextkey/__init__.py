"""Next-key log anomaly detectors: LogGPT's baseline and LogNEO-style position-aware PPO, beside an n-gram floor.

    python -m rationanomaly.nextkey --help

A model trained on normal log-key sequences predicts each next key; a sequence whose real key falls outside the
top K predictions somewhere is abnormal (LogGPT, IEEE BigData 2023; LogNEO, arXiv 2606.08153). Modules, in
pipeline order: `sequences` (loghub CSV -> DeepLog key files), `keys` (file format, vocabulary, framing),
`models` (GPT-2 / GPT-Neo from transformers), `reward` (the position-aware reward, LogGPT's +-1 as a special
case, Plackett-Luce helpers), `train` (pre-training, `loggpt`, `logneo`; torchrun/DDP), `ngram` (the floor),
`detect` (top-K detection and P/R/F1/FPR through `rationanomaly.evaluate`), `compare` (one table), `synthetic`
(made-up key files for tests and the quick start).

Importing this package, `keys`, `sequences` or `synthetic` does not import torch or transformers (a test checks).
"""
