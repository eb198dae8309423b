"""Metrics: plain counters kept on the hot path (stats.py), Prometheus collectors that read
them and the broker's state at scrape time (collectors.py), and the HTTP endpoint
(endpoint.py). Beside the layers: it imports nothing from them, so every layer may count
into `stats`."""
