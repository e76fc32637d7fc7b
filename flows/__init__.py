"""Prefect flows: the pipeline over the DVC stages, and multishot fan-out."""
