"""The Prefect flow over DVC stages with MLflow runs, in a throwaway DVC project."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hwnas.params import ParamsError, validate_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A DVC project with two stages: `first` writes a file, `second` copies it
    (or fails when params say so)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], check=True)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "control.txt").write_text("pass")
    (tmp_path / "second.py").write_text(textwrap.dedent("""
        import json, sys
        from hwnas import tracking
        if open("control.txt").read() == "fail":
            sys.exit(3)
        with tracking.run("second-own", tags={"stage": "second"}):
            open("b.txt", "w").write(open("a.txt").read())
            json.dump({"score": 1.5, "nested": {"n@32": 2}, "label": "x"}, open("metrics.json", "w"))
    """))
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""
        stages:
          first:
            cmd: python -c "open('a.txt','w').write('a')"
            outs: [a.txt]
          second:
            cmd: python second.py
            deps: [a.txt, control.txt, second.py]
            outs:  # as every stage of dvc.yaml: not deleted before the stage runs
            - b.txt: {persist: true}
            - metrics.json: {persist: true, cache: false}
          host:
            foreach: ${host_targets}
            do:
              cmd: python -c "open('host_${item}.txt', 'w').write('x')"
              outs:
              - host_${item}.txt
    """))
    return tmp_path


@pytest.fixture()
def harness(prefect_harness):
    yield


def _runs():
    from hwnas.tracking import _mlflow

    mlflow = _mlflow()
    return mlflow.search_runs(experiment_names=["hwnas"], output_format="list")


def test_flow_runs_stages_in_order_with_mlflow_lineage(project, harness):
    from flows.pipeline import pipeline

    run_id = pipeline(stages=["first", "second"])
    assert (project / "b.txt").read_text() == "a"
    runs = {r.info.run_name: r for r in _runs()}
    assert runs["pipeline"].info.run_id == run_id and runs["pipeline"].info.status == "FINISHED"
    child = runs["stage:second"]
    assert child.data.tags["mlflow.parentRunId"] == run_id
    assert "git_commit" in child.data.tags and child.data.tags["hardware_spec_hash"]
    # lineage: the stage run and the stage's own run carry dvc.lock's hashes as DVC wrote them
    from hwnas.lineage import dvc_lock_hashes

    lock = dvc_lock_hashes("second")
    assert lock["dvc.outs.b.txt"] and lock["dvc.deps.a.txt"]
    own = runs["second-own"]
    assert own.data.tags["mlflow.parentRunId"] == child.info.run_id
    for run in (child, own):
        assert {k: v for k, v in run.data.tags.items() if k.startswith("dvc.")} == lock
    from hwnas.lineage import describe

    [line] = [x for x in describe(own.info.run_id) if x.startswith("  - stage:second")]
    assert line.endswith("(= dvc.lock)")  # hwnas lineage: the workspace holds what it made
    # the stage's metrics.json, named in MLflow's alphabet
    assert child.data.metrics == {"score": 1.5, "nested.n_32": 2.0}
    # a second run has nothing to do: DVC decides, Prefect does not cache
    before = (project / "b.txt").stat().st_mtime_ns
    pipeline(stages=["first", "second"])
    assert (project / "b.txt").stat().st_mtime_ns == before
    upstream = (project / "a.txt").stat().st_mtime_ns
    pipeline(stages=["second"], force=True)  # e.g. after a library upgrade
    assert (project / "b.txt").stat().st_mtime_ns != before
    assert (project / "a.txt").stat().st_mtime_ns == upstream  # the stage alone


def test_failing_stage_marks_runs_failed_and_keeps_all_outputs(project, harness):
    from flows.pipeline import pipeline

    pipeline(stages=["first", "second"])
    before = {n: (project / n).read_bytes() for n in ("a.txt", "b.txt", "metrics.json")}
    (project / "control.txt").write_text("fail")
    with pytest.raises(RuntimeError, match="stage 'second' failed"):
        pipeline(stages=["first", "second"])
    # the failing stage's previous outputs too (persist: DVC does not delete them first)
    assert {n: (project / n).read_bytes() for n in before} == before
    last = {}
    for r in sorted(_runs(), key=lambda r: r.info.start_time):
        last[r.info.run_name] = r.info.status
    assert last["pipeline"] == "FAILED" and last["stage:second"] == "FAILED"
    assert last["stage:first"] == "FINISHED"


def test_second_pipeline_in_the_workspace_stops_clearly(project):
    from flows.pipeline import PipelineBusy, workspace_lock

    with workspace_lock():
        with pytest.raises(PipelineBusy, match="another pipeline is running"):
            with workspace_lock():
                pass
    with workspace_lock():  # released after the first finished
        pass


@pytest.mark.parametrize("base, message", [
    ({"seed": -1, "hardware": "neural-engine-32"}, "base.seed"),
    ({"seed": 0, "hardware": "warp-drive"}, "base.hardware"),
])
def test_invalid_params_name_the_key(base, message):
    with pytest.raises(ParamsError, match=message):
        validate_params({"base": base})


def test_run_stops_on_a_bad_param_before_any_stage(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from hwnas.cli import app
    from hwnas.params import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params["microbench"]["samples"] = -5
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 2
    assert "params.yaml: microbench.samples:" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing ran, nothing was tracked


def test_a_failing_stage_ends_hwnas_run_in_lines_without_a_traceback(project):
    (project / "control.txt").write_text("fail")
    hwnas = Path(sys.executable).parent / "hwnas"
    proc = subprocess.run([str(hwnas), "run", "--stage", "first", "--stage", "second"],
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out and "╭" not in out, out
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stage 'second' failed" in errors[0], out


def test_a_foreach_stage_runs_its_items_and_nothing_else(project, harness):
    """Given a foreach name with an empty list, ``dvc repro`` would rebuild every stage."""
    import yaml

    from flows.pipeline import pipeline

    pipeline(stages=["host"])  # host_targets: [] in the project's params
    assert not list(project.glob("host_*")) and not (project / "a.txt").exists()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["host_targets"] = ["onnxruntime"]
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    pipeline(stages=["host"])
    assert (project / "host_onnxruntime.txt").exists() and not (project / "a.txt").exists()
