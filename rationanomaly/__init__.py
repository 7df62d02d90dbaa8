"""RationAnomaly on stock verl: log anomaly detection with an LLM that reasons before it answers."""

__version__ = "0.1.0"
