"""Where the pipeline's artifacts live, relative to the workspace.

The one home of these paths: stages, the CLI and the flows read them from here, and
``tests/test_layout.py`` checks that ``dvc.yaml`` declares the same ones. Artifacts
of a measurement target (microbenchmarks, estimator) are keyed by the target's name:
the spec name for a simulated accelerator (``base.hardware``), ``cpu`` for the host.
"""
from __future__ import annotations

from pathlib import Path

MICROBENCH = Path("data/microbench")
ESTIMATORS = Path("models/estimator")
ESTIMATOR_RESULTS = Path("results/estimator")

SUPERNET = Path("models/supernet.pt")
SUPERNET_CHECKPOINT = Path("models/supernet_ckpt/last.pt")
SUBNETS = Path("models/subnets")
BASELINE_MODEL = Path("models/baseline/baseline.pt")

REFERENCES = Path("results/references")
TRAIN_SUPERNET = Path("results/train_supernet")
EVAL_SUPERNET = Path("results/eval_supernet")
SEARCH = Path("results/search")
PARETO = SEARCH / "pareto.json"
CANDIDATES = SEARCH / "candidates.parquet"
SEARCH_JOURNAL = SEARCH / "journal"
EXTRACT = Path("results/extract")
EXTRACTED = EXTRACT / "subnets.json"
BASELINE = Path("results/baseline")
EVALUATE = Path("results/evaluate")
HEADLINE = EVALUATE / "headline.json"  # the few figures dvc metrics compares
EXPERIMENTS = Path("results/experiments")  # hwnas experiment: outside the DVC pipeline


HOST_TARGETS = ("cpu",)  # measured on this machine, not simulated (params.yaml host_targets)


def target_name(backend: str, spec_name: str) -> str:
    """The key of a measurement target: the spec for the simulator, ``cpu`` for the host."""
    return spec_name if backend == "sim" else "cpu"


def microbench_table(target: str) -> Path:
    return MICROBENCH / f"{target}.parquet"


def estimator_dir(target: str) -> Path:
    return ESTIMATORS / target


def estimator_results(target: str) -> Path:
    return ESTIMATOR_RESULTS / target
