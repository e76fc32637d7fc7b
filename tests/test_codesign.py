"""Co-design: the grid's points are DVC's matrix stages and validated specs, a bad point is
refused before anything runs, and two points run end to end (estimator, search against one
supernet, report with the cross-evaluation) in a workspace with tiny params."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hardware.spec import load_spec
from hwnas.codesign.grid import GridError, area_mm2, point_key, point_spec, points, specs
from test_kill_resume import ROOT, _env, _run, template  # noqa: F401 (a fixture)

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
COST = PARAMS["codesign"]["cost"]


def _grid(**axes) -> dict:
    return {"mac_array": [32], "vector_lanes": [32], "sram_kib": [2048],
            "dram_bandwidth_gb_s": [16], "fusion": [True], **axes}


def test_the_points_are_the_matrix_stages_dvc_runs(tmp_path, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["codesign"]["tasks"] = ["classification"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, "init", "-q", "--no-scm"], cwd=tmp_path, check=True)
    listed = subprocess.run([dvc, "stage", "list"], cwd=tmp_path, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    stages = {line.split()[0]: line.split()[-1] for line in listed if line.startswith("codesign")}
    keys = [point_key(p) for p in points(params["codesign"]["grid"])]
    assert len(keys) == 12
    # each point's folder is where the stage writes it (DVC names it in its own spelling)
    folders = [v for k, v in stages.items() if k.startswith("codesign@")]
    assert folders == [f"results/codesign/classification/points/{k}" for k in keys]
    assert "codesign_report@classification" in stages
    monkeypatch.chdir(tmp_path)
    from flows.stages import instances

    assert instances("codesign", params, "classification") == [
        k for k in stages if k.startswith("codesign@classification-")]
    assert instances("codesign", params, "detection") == []
    assert instances("codesign_report", params, "classification") == [
        "codesign_report@classification"]


def test_a_point_is_the_base_spec_with_its_values():
    base = load_spec("neural-engine-32")
    [on, off] = points(_grid(mac_array=[8], sram_kib=[128], fusion=[True, False]))
    spec = point_spec(base, on)
    assert (spec.mac_array.rows, spec.mac_array.cols, spec.sram_kib) == (8, 8, 128)
    assert spec.fusion == base.fusion and point_spec(base, off).fusion == ()
    assert spec.energy == base.energy and spec.clock_mhz == base.clock_mhz
    assert spec.name == "codesign-8-32-128-16-true"
    # the area proxy grows with each of its terms
    big = point_spec(base, {**on, "mac_array": 16})
    more_sram = point_spec(base, {**on, "sram_kib": 256})
    assert area_mm2(big, COST) - area_mm2(spec, COST) == pytest.approx((256 - 64) * COST["mac_mm2"])
    assert area_mm2(more_sram, COST) > area_mm2(spec, COST)


@pytest.mark.parametrize("axes, message", [
    ({"vector_lanes": [32, 0]}, "codesign.grid.vector_lanes: 0 (with mac_array 32, sram_kib "
                                "2048, dram_bandwidth_gb_s 16, fusion True) makes an invalid "
                                "spec: field 'vector_unit.lanes'"),
    ({"mac_array": [8, 64], "sram_kib": [4]}, "codesign.grid.sram_kib: 4 (with mac_array 64, "
                                              "vector_lanes 32, dram_bandwidth_gb_s 16, fusion "
                                              "True) makes an invalid spec: field 'sram_kib': "
                                              "SRAM below one tile of the 64x64 array"),
    ({"dram_bandwidth_gb_s": [0]}, "codesign.grid.dram_bandwidth_gb_s: 0 "),
    ({"dram_bandwidth_gb_s": [-1]}, "codesign.grid.dram_bandwidth_gb_s: -1 "),
    ({"mac_array": [8, 8]}, "codesign.grid.mac_array: a value appears twice"),
    ({"sram_kib": [16, 16.0]}, "codesign.grid.sram_kib: a value appears twice"),
    ({"mac_array": list(range(8, 120))}, "codesign.grid: 112 points"),
])
def test_an_invalid_point_names_the_grid_key_and_value(axes, message):
    with pytest.raises(GridError) as err:
        specs("neural-engine-32", _grid(**axes))
    assert str(err.value).startswith(message), str(err.value)


def test_two_points_that_make_the_same_chip_are_refused(tmp_path):
    data = yaml.safe_load(load_spec("neural-engine-32").model_dump_json())
    data.update(name="no-fusion", fusion=[])
    (tmp_path / "no-fusion.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(GridError, match="codesign.grid: points 32-32-2048-16-true and "
                                        "32-32-2048-16-false make the same chip"):
        specs(str(tmp_path / "no-fusion.yaml"), _grid(fusion=[True, False]))


def test_cross_evaluation_per_axis_counts_the_pairs_that_differ_in_it_alone():
    from hwnas.codesign.report import cross_summary

    grid = _grid(mac_array=[8, 32], vector_lanes=[4, 32])
    keys = [point_key(p) for p in points(grid)]  # 8-4, 8-32, 32-4, 32-32
    df = pd.DataFrame([{"key": point_key(p), **p} for p in points(grid)])
    ratio = pd.DataFrame(1.0, index=keys, columns=keys)
    ratio.loc[keys[0], keys[1]] = 1.5   # lanes alone differ
    ratio.loc[keys[0], keys[3]] = 3.0   # both differ: in no per-axis figure
    c = cross_summary(ratio, df)
    assert c["pairs"] == 12 and c["max_slowdown"] == pytest.approx(2.0)
    assert c["worst"] == {"network_of": keys[0], "on": keys[3]}
    assert c["by_axis"]["vector_lanes"]["pairs"] == 4
    assert c["by_axis"]["vector_lanes"]["max_slowdown"] == pytest.approx(0.5)
    assert c["by_axis"]["mac_array"]["max_slowdown"] == 0.0


def test_hwnas_codesign_refuses_a_bad_grid_before_anything_runs(tmp_path, monkeypatch):
    from hwnas.cli import app

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["codesign"]["grid"]["vector_lanes"] = [0]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["codesign"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: params.yaml: codesign.grid.vector_lanes: 0 (with mac_array 8, sram_kib 16, "
        "dram_bandwidth_gb_s 16, fusion True) makes an invalid spec: field 'vector_unit.lanes': "
        "Input should be greater than 0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvc.yaml", "params.yaml"]
    # YAML 1.1 reads `yes` as true, DVC (YAML 1.2) as text: the point would have two names
    text = (ROOT / "params.yaml").read_text().replace("fusion: [true]", "fusion: [yes]")
    (tmp_path / "params.yaml").write_text(text)
    result = CliRunner().invoke(app, ["codesign"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: params.yaml: codesign.grid.fusion: 'yes' reads as "
                                     "True here but as str 'yes' to DVC (YAML 1.2): write true "
                                     "or false")
    assert (tmp_path / "params.yaml").read_text() == text  # not enabled either
    # dvc.yaml's matrix reads the top-level grid only: a task's own would never reach it
    params["codesign"]["grid"]["vector_lanes"] = [32]
    params["classification"] = {"codesign": {"area_budget_mm2": 1.0}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["codesign"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: params.yaml: classification.codesign: set the "
                                     "study at the top level only (dvc.yaml's matrix reads "
                                     "codesign.grid there)")


def test_a_busy_workspace_is_refused_before_params_yaml_changes(tmp_path, monkeypatch):
    from flows.pipeline import workspace_lock
    from hwnas.cli import app

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    before = (tmp_path / "params.yaml").read_text()
    with workspace_lock():
        result = CliRunner().invoke(app, ["codesign"])
    assert result.exit_code == 2 and "another pipeline is running" in result.output
    assert (tmp_path / "params.yaml").read_text() == before  # codesign.tasks untouched


def _stage(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ws, env=_env(ws),
                          capture_output=True, text=True, timeout=600)


def _point(ws: Path, key: str) -> str:
    proc = _stage(ws, "stages.codesign", "--task", "classification", "--point", key)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_two_points_end_to_end(template, tmp_path):  # noqa: F811
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["codesign"].update(grid=_grid(mac_array=[8, 32], sram_kib=[32]), eval_networks=20,
                              microbench={"samples": 400, "time_budget_s": 60})
    params["train_estimator"]["n_estimators"] = 40
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    _run(ws, "train_supernet")
    keys = [point_key(p) for p in points(params["codesign"]["grid"])]
    for key in keys:
        assert "best network" in _point(ws, key)
    rerun = _point(ws, keys[0])  # the spec and settings are unchanged: nothing is redone
    assert "estimator: reused" in rerun

    folder = ws / "results/codesign/classification/points"
    results = {k: json.loads((folder / k / "metrics.json").read_text()) for k in keys}
    for key, m in results.items():
        assert m["search"]["candidates"] == params["search"]["candidates"]
        best = m["best"]
        assert best["score"] >= m["baseline"]["score"]  # at the baseline's supernet score
        assert best["latency_reduction"] == pytest.approx(
            1 - best["latency_ms"] / m["baseline"]["latency_ms"])
        assert m["estimator"]["n"] == 20 and 0 <= m["estimator"]["within_10pct"] <= 1
    # the same baseline network, slower on the smaller array
    a, b = (results[k]["baseline"] for k in keys)
    assert a["arch"] == b["arch"] and a["latency_ms"] > b["latency_ms"]

    report_run = _stage(ws, "stages.codesign_report", "--task", "classification")
    assert report_run.returncode == 0 and "2 points" in report_run.stdout, report_run.stderr
    out = ws / "results/codesign/classification"
    table = pd.read_csv(out / "table.csv")
    assert list(table["key"]) == keys and table["cost_pareto"].any()
    cross = pd.read_csv(out / "cross.csv", index_col=0)
    assert cross.shape == (2, 2) and all(cross.loc[k, k] == pytest.approx(1.0) for k in keys)
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["cross"]["pairs"] == 2
    assert summary["min_latency_reduction"] == pytest.approx(table["latency_reduction"].min())
    report = (out / "report.md").read_text()
    assert "## Answers" in report and "Specialisation" in report
    assert (out / "pareto.png").stat().st_size > 10_000 and (out / "cross.png").stat().st_size > 5_000


def test_the_report_needs_every_point(template, tmp_path):  # noqa: F811
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    proc = _stage(ws, "stages.codesign_report", "--task", "classification")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("codesign_report: results/codesign/classification/points/"
                                   "8-4-16-16-true/metrics.json: not found: run `hwnas "
                                   "codesign --task classification`")
    assert not (ws / "results/codesign").exists()


def test_a_study_where_no_point_has_a_network_is_reported(tmp_path):
    from hwnas.codesign import report

    grid = _grid(mac_array=[8, 16])
    by_key = specs("neural-engine-32", grid)
    base = {"arch": "x", "score": 90.0, "test_score": 91.0, "latency_ms": 0.1, "energy_mj": 0.01,
            "memory_bytes": 1000}
    results = {k: {"baseline": base, "best": None, "seconds": 60.0,
                   "estimator": {"within_10pct": 1.0}} for k in by_key}
    df = report.table(grid, results, by_key, COST)
    ratio = report.cross(df, by_key)
    s = report.summary(df, ratio, 0.5)
    assert ratio.empty and s["cross"] is None and s["pick"] is None
    assert s["points_with_a_network"] == 0 and s["min_latency_reduction"] is None
    text = report.markdown(df, ratio, s, "neural-engine-32", COST, "classification")
    assert "No point has a network at the baseline's supernet score" in text
    report.plot_pareto(df, tmp_path / "p.png", 0.5)
    report.plot_cross(ratio, df, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000
