"""Lineage: which inputs (by content hash) made a stage's outputs, as MLflow tags,
and the walk back from any run to the data, estimator, supernet and search behind it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

LOCK_FILE = Path("dvc.lock")


def _lock_entries(stage: str, lock: Path) -> list[dict]:
    """dvc.lock's entries of ``stage``: itself (``search@detection``), or each
    ``stage@item`` of a ``foreach`` stage named bare (``microbench_host``)."""
    if not lock.exists():
        return []
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
    return [e or {} for name, e in stages.items()
            if name == stage or ("@" not in stage and name.split("@")[0] == stage)]


def dvc_lock_hashes(stage: str, lock: Path = LOCK_FILE) -> dict[str, str]:
    """``dvc.<deps|outs>.<path>`` -> content hash of each dependency and output of ``stage``
    as recorded in dvc.lock (empty before the stage has run)."""
    tags = {}
    for entry in _lock_entries(stage, lock):
        for kind in ("deps", "outs"):
            for item in entry.get(kind) or ():
                digest = item.get("md5") or item.get("hash") or item.get("checksum")
                if digest:
                    tags[f"dvc.{kind}.{item['path']}"] = str(digest)
    return tags


def stage_metrics(stage: str, lock: Path = LOCK_FILE) -> dict[str, float]:
    """The numbers in the ``metrics.json`` outputs of ``stage`` (per dvc.lock), flattened
    to ``key.subkey``: what the pipeline logs on the stage's run."""
    out: dict[str, float] = {}

    def flat(obj, prefix):
        for k, v in obj.items():
            if isinstance(v, dict):
                flat(v, f"{prefix}{k}.")
            elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[f"{prefix}{k}"] = float(v)

    for entry in _lock_entries(stage, lock):
        for item in entry.get("outs") or ():
            path = Path(item["path"])
            if path.name == "metrics.json" and path.is_file():
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict):
                    flat(data, "")
    return out


def describe(run_id: str) -> list[str]:
    """Human-readable lineage of a run: itself, its ancestors, and the stage runs
    beside it in the same pipeline run (data, estimator, supernet, search)."""
    from mlflow.tracking import MlflowClient

    from hwnas.tracking import _mlflow

    _mlflow()
    client = MlflowClient()
    run = client.get_run(run_id)
    lines = [_run_line(run, "")]
    lines += [f"    {k} = {v}" for k, v in sorted(run.data.params.items())]
    lines += [f"    tag {k} = {v}" for k, v in sorted(run.data.tags.items())
              if not k.startswith("mlflow.")]
    chain = []
    parent_id = run.data.tags.get("mlflow.parentRunId")
    while parent_id:
        parent = client.get_run(parent_id)
        chain.append(parent)
        parent_id = parent.data.tags.get("mlflow.parentRunId")
    for depth, parent in enumerate(chain, 1):
        lines.append(_run_line(parent, "  " * depth + "<- "))
    top = chain[-1] if chain else run
    siblings = client.search_runs(
            [top.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{top.info.run_id}'",
            order_by=["attributes.start_time ASC"])
    if siblings:
        lines.append(f"stages of pipeline run {top.info.run_id}:")
    for s in siblings:
        lines.append(_run_line(s, "  - ") + _against_lock(s))
        lines += [f"      {k} = {v}" for k, v in sorted(s.data.tags.items())
                  if k.startswith("dvc.") or k == "hardware_spec_hash"]
    return lines


def _against_lock(stage_run) -> str:
    """Whether the workspace's dvc.lock still records what this stage run made."""
    tags = {k: v for k, v in stage_run.data.tags.items() if k.startswith("dvc.")}
    if not tags:
        return ""
    lock = dvc_lock_hashes(stage_run.data.tags.get("stage", ""))
    if tags == lock:
        return " (= dvc.lock)"
    changed = sorted(k.split(".", 2)[2] for k in tags.keys() | lock.keys()
                     if tags.get(k) != lock.get(k))
    return f" (dvc.lock differs: {', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})"


def _run_line(run, prefix: str) -> str:
    name = run.data.tags.get("mlflow.runName", run.info.run_name)
    commit = run.data.tags.get("git_commit", "?")[:10]
    return f"{prefix}{name} [{run.info.run_id}] {run.info.status} commit {commit}"
