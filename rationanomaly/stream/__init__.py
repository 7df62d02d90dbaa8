"""Real-time detection service: log lines in from Redis Streams or Kafka, verdicts out, per line and per window.

    python -m rationanomaly.stream serve --transport redis --redis_url redis://127.0.0.1:6379/0

Modules: events (records), parser (Drain3 + snapshots), detectors (plug-ins), engine (cache, single-flight model
thread, windows), redis_transport / kafka_transport, service (the worker loop), feed (replay), bench (latency).
Needs the `stream` extra and drain3 (`make install-stream`); the rest of the package never imports this one.
"""
