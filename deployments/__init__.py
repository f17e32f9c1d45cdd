"""The three deployments: `index`, `nightly-reindex`, `force-reindex` (serve.py, prefect.yaml)."""
