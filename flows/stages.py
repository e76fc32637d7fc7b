"""The pipeline's stages as ``dvc.yaml`` declares them, read without starting Prefect
(the CLI checks ``--stage`` names before a flow, and Prefect's state folder, exist)."""
from __future__ import annotations

from pathlib import Path

# The default flow: every stage but the long proof (eval_supernet) and the host-CPU estimator.
STAGES = ("references", "microbench", "train_estimator", "train_supernet", "search", "extract",
          "baseline", "evaluate")


def dvc_stages() -> list[str]:
    import yaml

    return list((yaml.safe_load(Path("dvc.yaml").read_text()) or {}).get("stages", {}))
