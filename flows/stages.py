"""The pipeline's stages as ``dvc.yaml`` declares them, read without starting Prefect
(the CLI checks ``--stage`` names before a flow, and Prefect's state folder, exist)."""
from __future__ import annotations

import re
from pathlib import Path

# The default flow: every stage, in order (the host stages build the ``host_targets`` of
# params.yaml, none by default).
STAGES = ("references", "microbench", "train_estimator", "microbench_host", "train_estimator_host",
          "data", "train_supernet", "eval_supernet", "search", "extract", "baseline", "evaluate")


def _stages() -> dict:
    import yaml

    return (yaml.safe_load(Path("dvc.yaml").read_text()) or {}).get("stages", {})


def dvc_stages() -> list[str]:
    return list(_stages())


def instances(stage: str, params: dict, task: str = "classification") -> list[str]:
    """What ``dvc repro`` is given for ``stage``: itself, ``stage@task`` for a task's stage
    (``foreach: ${tasks}``, ``${codesign.tasks}`` or ``${findings.tasks}``), the task's items of a ``matrix``
    stage, or one ``stage@item`` per item of another ``foreach`` stage, none for an empty
    list. (Given a ``foreach`` name whose list is empty, ``dvc repro``
    finds no stage and reproduces the whole pipeline instead.)"""
    entry = _stages()[stage]
    if "matrix" in entry:  # a study's points (codesign): the task's, as DVC names them
        from dvc.repo import Repo

        with Repo() as repo:
            return [s.name for s in repo.index.stages
                    if s.name.startswith(f"{stage}@{task}-")]
    if "foreach" not in entry:
        return [stage]
    if entry["foreach"] in ("${tasks}", "${codesign.tasks}", "${findings.tasks}"):
        return [f"{stage}@{task}"]
    items = params
    for key in re.fullmatch(r"\$\{(.+)\}", entry["foreach"]).group(1).split("."):
        items = items[key]
    return [f"{stage}@{item}" for item in items]
