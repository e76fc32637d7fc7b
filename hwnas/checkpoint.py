"""Checkpoints that resume only what they were written for, written atomically."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from hwnas.files import atomic_path, write_text


def fingerprint(params: dict) -> str:
    """What a checkpoint or cached result must agree with (everything but where it runs)."""
    keep = {k: v for k, v in params.items() if k not in ("device", "threads")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def code_fingerprint(params: dict, *modules) -> str:
    """``fingerprint`` of the params, the source of ``modules`` and the torch version: a
    checkpoint of other code, or of another torch's numerics, would silently stand in for
    a retrain."""
    code = "".join(Path(m.__file__).read_text() for m in modules)
    return fingerprint({**params, "code": hashlib.sha256(code.encode()).hexdigest(),
                        "torch": torch.__version__})


def save_atomic(obj: dict, path: Path) -> None:
    """``torch.save`` that a kill cannot tear (``hwnas.files``)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def claim_run(marker: Path, run_id: str) -> None:
    """Record ``run_id`` in ``marker`` as the run now doing a stage's work, after marking
    KILLED the run recorded there and its children if a kill left them RUNNING (a SIGKILL
    ends no run). Recorded from the run's start: a kill before the first checkpoint or
    journal entry is closed too."""
    from hwnas import tracking

    old = marker.read_text().strip() if marker.exists() else ""
    if old:
        tracking.close_if_running(old)
        try:  # e.g. the search's candidate runs, killed while they were logged
            from mlflow import MlflowClient

            client = MlflowClient()
            for child in client.search_runs(
                    [client.get_run(old).info.experiment_id],
                    f"tags.mlflow.parentRunId = '{old}' and attributes.status = 'RUNNING'"):
                tracking.close_if_running(child.info.run_id)
        except Exception:  # tracking is lineage, never a reason to fail the work
            pass
    write_text(marker, run_id + "\n")


def load_checkpoint(path: Path, fp: str, device: torch.device | str = "cpu",
                    log=print) -> dict | None:
    """The checkpoint at ``path`` if it was written with fingerprint ``fp``, else None."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a torn or foreign file: start over, but say so
        log(f"ignoring unreadable checkpoint {path}: {err}")
        return None
    if ckpt.get("fingerprint") != fp:
        log(f"{path} was written with other params or code; starting over")
        return None
    return ckpt
