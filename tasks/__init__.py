"""The indexing DAG's nodes: plain functions over typed records, and their Prefect wrappers (dag.py)."""
