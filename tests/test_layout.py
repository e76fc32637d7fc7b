"""The shape of the code: stages are thin and imported by nothing, ``dvc.yaml`` knows
every module a stage runs, and where artifacts live is decided in one place."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hwnas import layout

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hwnas", "hardware", "stages", "flows")
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Project modules ``path`` imports anywhere (a function-level import runs too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                parts = name.split(".")
                out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def project_files(module: str) -> set[Path]:
    """Files of every project module ``module`` reaches, package ``__init__``s included."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is not None:
            todo.extend(_imports(path) - seen)
        if name == "hwnas.tasks":  # imported by name (``import_module``) when used
            from hwnas.tasks import TASKS

            todo.extend(m for t in TASKS.values() for m in (t.head_module, t.torch_module))
    return {p.relative_to(ROOT) for p in map(_module_file, seen) if p is not None}


def _stage_module(cmd: str) -> str:
    words = cmd.split()
    return words[words.index("-m") + 1]


def _covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


@pytest.mark.parametrize("stage", sorted(DVC))
def test_dvc_deps_cover_every_module_a_stage_runs(stage):
    """``dvc status`` tells the truth only if a stage depends on the code it runs."""
    entry = DVC[stage].get("do", DVC[stage])  # a foreach stage's template
    files = project_files(_stage_module(entry["cmd"]))
    if Path("hardware/spec.py") in files:
        files.add(Path("hardware/specs"))  # the spec YAMLs it reads
    missing = sorted(str(f) for f in files if not _covered(f, entry["deps"]))
    assert not missing, f"dvc.yaml: stage {stage} does not list {missing}"


def test_nothing_outside_stages_imports_stages():
    offenders = []
    for folder in ("hwnas", "hardware", "flows", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(m == "stages" or m.startswith("stages.") for m in _imports(path)):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"these import stages: {offenders}"


def test_dvc_outputs_are_where_the_code_writes_them():
    target = PARAMS["base"]["hardware"]

    task_stages = {"data", "train_supernet", "eval_supernet", "search", "extract", "baseline", "evaluate",
                   "findings"}

    def outs(stage):
        # host stages are foreach over host_targets (onnxruntime), task stages over tasks
        each = layout.current_task() if stage in task_stages else "onnxruntime"
        declared = []
        for key in ("outs", "metrics", "plots"):
            for item in DVC[stage].get("do", DVC[stage]).get(key, []):
                path = next(iter(item)) if isinstance(item, dict) else item
                declared.append(Path(path.replace("${base.hardware}", target)
                                     .replace("${item}", each)))
        return declared

    expected = {
        "microbench": [layout.microbench_table(target)],
        "train_estimator": [layout.estimator_dir(target), layout.estimator_results(target)],
        "microbench_host": [layout.microbench_table("onnxruntime")],
        "train_estimator_host": [layout.estimator_dir("onnxruntime"),
                                 layout.estimator_results("onnxruntime")],
        "data": [layout.task_data(layout.current_task())],
        "train_supernet": [layout.SUPERNET, layout.SUPERNET_CHECKPOINT.parent,
                           layout.TRAIN_SUPERNET],
        "eval_supernet": [layout.EVAL_SUPERNET / n for n in
                          ("subnets.jsonl", "rows.json", "probes.json", "metrics.json")],
        "search": [layout.CANDIDATES, layout.PARETO, layout.SEARCH_JOURNAL, layout.CONFIRMATIONS],
        "extract": [layout.SUBNETS, layout.EXTRACTED],
        "baseline": [layout.BASELINE_MODEL.parent, layout.BASELINE],
        "evaluate": [layout.EVALUATE],
        "references": [layout.REFERENCES],
        "findings": [layout.FINDINGS / n for n in ("journal", "runs.jsonl", "metrics.json",
                                                   "report.md", "ablation.png", "curation.png",
                                                   "curation.csv")],
    }
    for stage, paths in expected.items():
        declared = outs(stage)
        for path in paths:
            assert any(d == path or path in d.parents for d in declared), (stage, path)


def test_an_unknown_params_key_stops_the_run_before_any_stage(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["search"]["candidatez"] = 10
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run([str(Path(sys.executable).parent / "hwnas"), "run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: params.yaml: search.candidatez: unknown key"], proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / ".prefect").exists()


def test_every_output_survives_a_failing_stage():
    """DVC deletes a stage's outputs before running it unless they persist; each stage
    replaces its outputs atomically (hwnas.files), so a failure keeps the previous ones."""
    for stage, entry in DVC.items():
        entry = entry.get("do", entry)
        for key in ("outs", "metrics", "plots"):
            for item in entry.get(key, []):
                assert isinstance(item, dict) and next(iter(item.values())).get("persist"), \
                    (stage, item)
