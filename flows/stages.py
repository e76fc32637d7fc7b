"""The pipeline's stages as ``dvc.yaml`` declares them, read without starting Prefect
(the CLI checks ``--stage`` names before a flow, and Prefect's state folder, exist)."""
from __future__ import annotations

from pathlib import Path

# The default flow: every stage, in order (the host stages build the ``host_targets`` of
# params.yaml, none by default).
STAGES = ("references", "microbench", "train_estimator", "microbench_host", "train_estimator_host",
          "train_supernet", "eval_supernet", "search", "extract", "baseline", "evaluate")


def dvc_stages() -> list[str]:
    import yaml

    return list((yaml.safe_load(Path("dvc.yaml").read_text()) or {}).get("stages", {}))
