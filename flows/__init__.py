"""Prefect flows and the `rci` command line."""
