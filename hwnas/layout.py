"""Where the pipeline's artifacts live, relative to the workspace.

The one home of these paths: stages, the CLI and the flows read them from here, and
``tests/test_layout.py`` checks that ``dvc.yaml`` declares the same ones. Artifacts
of a measurement target (microbenchmarks, estimator) are keyed by the target's name:
the spec name for a simulated accelerator (``base.hardware``), ``cpu`` for the host.
A task's pipeline (its data, supernet, search, models and evaluation) lives under
``data/<task>``, ``models/<task>/`` and ``results/<task>/``.
"""
from __future__ import annotations

from pathlib import Path

MICROBENCH = Path("data/microbench")
ESTIMATORS = Path("models/estimator")
ESTIMATOR_RESULTS = Path("results/estimator")

DATA = Path("data")
MODELS = Path("models")
RESULTS = Path("results")
DEFAULT_TASK = "classification"

# A task's own artifacts, under models/<task>/ and results/<task>/ (``task_path``)
_TASK_PATHS = {
    "SUPERNET": "models/supernet.pt",
    "SUPERNET_CHECKPOINT": "models/supernet_ckpt/last.pt",
    "SUBNETS": "models/subnets",
    "BASELINE_MODEL": "models/baseline/baseline.pt",
    "TRAIN_SUPERNET": "results/train_supernet",
    "EVAL_SUPERNET": "results/eval_supernet",
    "SEARCH": "results/search",
    "PARETO": "results/search/pareto.json",
    "CANDIDATES": "results/search/candidates.parquet",
    "SEARCH_JOURNAL": "results/search/journal",
    "CONFIRMATIONS": "results/search/confirm.jsonl",  # the search's from-scratch runs
    "EXTRACT": "results/extract",
    "EXTRACTED": "results/extract/subnets.json",
    "BASELINE": "results/baseline",
    "EVALUATE": "results/evaluate",
    "HEADLINE": "results/evaluate/headline.json",  # the few figures dvc metrics compares
    "FINDINGS": "results/findings",  # the article's findings (hwnas findings)
}
_task = DEFAULT_TASK


def task_path(name: str, task: str) -> Path:
    """``name`` (a key of ``_TASK_PATHS``) for ``task``: ``results/search`` ->
    ``results/<task>/search``."""
    top, rest = _TASK_PATHS[name].split("/", 1)
    return Path(top) / task / rest


def task_data(task: str) -> Path:
    """What the task's data stage writes (a COCO root for detection, a VOC-style one for
    segmentation)."""
    return DATA / task


def use_task(task: str) -> None:
    """Point the task paths (``layout.SUPERNET`` ...) at ``task``'s: a stage process works
    for one task, named on its command line (``--task``)."""
    global _task
    _task = task


def current_task() -> str:
    return _task


def __getattr__(name: str) -> Path:
    if name in _TASK_PATHS:
        return task_path(name, _task)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


REFERENCES = Path("results/references")
EXPERIMENTS = Path("results/experiments")  # hwnas experiment: outside the DVC pipeline
CODESIGN = Path("results/codesign")  # hwnas codesign: a study over codesign.grid per task


def codesign_dir(task: str) -> Path:
    """A task's co-design study: the report's files, and ``points/<key>/`` per point."""
    return CODESIGN / task


HOST_TARGETS = ("onnxruntime",)  # measured on this machine (params.yaml host_targets)


def target_name(backend: str, spec_name: str) -> str:
    """The key of a measurement target: the spec for the simulator, else the backend."""
    return spec_name if backend == "sim" else backend


def microbench_table(target: str) -> Path:
    return MICROBENCH / f"{target}.parquet"


def estimator_dir(target: str) -> Path:
    return ESTIMATORS / target


def estimator_results(target: str) -> Path:
    return ESTIMATOR_RESULTS / target
