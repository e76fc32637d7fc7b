"""The measured target: ONNX Runtime's timing protocol, its microbenchmarks and scoring, and
a device team's plan timed elsewhere and imported."""
from __future__ import annotations

import csv
import os
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from hwnas.arch import decode
from hwnas.cli import app
from hwnas.estimator import Estimator
from hwnas.estimator.microbench import MicrobenchConfig, run_microbench
from hwnas.estimator.onnxrt import Protocol, Timer, export, time_files
from hwnas.estimator.plan import read_timings
from hwnas.registry import reference

SPACE = [{"resolution": 32, "in_channels": 1}]
QUICK = Protocol(repeats=2, warmup=1, min_repeat_ms=0.1)


def test_protocol_times_every_model_every_repeat(tmp_path):
    small = export(torch.nn.Conv2d(8, 8, 1), (1, 8, 8, 8), tmp_path / "small.onnx")
    big = export(torch.nn.Conv2d(64, 64, 3, padding=1), (1, 64, 32, 32), tmp_path / "big.onnx")
    times = time_files([str(small), str(big)], Protocol(repeats=3, warmup=1, min_repeat_ms=0.5))
    assert times.shape == (2, 3) and (times > 0).all()
    assert np.median(times[1]) > 20 * np.median(times[0])  # 37.7 MMACs vs 4 kMACs


def test_the_timer_is_one_process_pinned_to_one_core():
    with Timer(QUICK) as timer:
        pid = timer._pool.submit(os.getpid).result()
        if hasattr(os, "sched_getaffinity"):
            assert timer._pool.submit(os.sched_getaffinity, 0).result() == {timer.core}
            if len(timer._parent_cores) > 1:  # and this process keeps off its core
                assert timer.core not in os.sched_getaffinity(0)
        times = timer.time_modules([(torch.nn.Conv2d(4, 8, 3), (1, 4, 16, 16))] * 2)
        assert timer._pool.submit(os.getpid).result() == pid  # the same process throughout
        folder = timer._tmp.name
    assert times.shape == (2, 2) and (times > 0).all()
    assert pid != os.getpid() and not os.path.exists(folder)
    if hasattr(os, "sched_getaffinity"):
        assert os.sched_getaffinity(0) == timer._parent_cores  # given back on close


def test_the_profiler_attributes_every_node_the_runtime_runs_to_its_unit():
    from hwnas.estimator.microbench import network_module
    from hwnas.estimator.onnxrt import node_unit

    arch = reference("tiny_conv_32")
    with Timer(QUICK) as timer:
        nodes = timer.profile_modules([network_module(arch)])[0]
    units = {node_unit(name, len(arch.blocks)) for name in nodes}
    assert set(range(len(arch.blocks) + 2)) <= units  # stem, each block, head
    assert all(v.shape == (2,) and (v >= 0).all() for v in nodes.values())
    assert node_unit("/blocks/blocks.3/dw/dw.2/Relu_output_0_nchwc", 5) == 4
    assert node_unit("/head/fc/Gemm", 5) == 6 and node_unit("ReorderOutput", 5) == -1


@pytest.mark.parametrize("units", ["profiled", "isolated"])
def test_onnxruntime_microbench_times_units_and_whole_networks(units):
    cfg = MicrobenchConfig(backend="onnxruntime", samples=6, repeats=2, warmup=1,
                           min_repeat_ms=0.1, spaces=SPACE, adaptive_share=0,
                           max_block_macs=2e6, calibration_networks=1, units=units)
    table = run_microbench(cfg, None)
    assert (table.groupby("sample").size() == 2).all()  # one row per unit and repeat
    assert (table["latency_ms"] > 0).all() and (table["backend"] == "onnxruntime").all()
    assert (table["kind"] == "network").sum() == 2  # one whole network, two repeats


def test_scoring_puts_the_machines_test_retest_beside_the_estimator(tmp_path):
    from hardware.spec import load_spec
    from hwnas.estimator.model import LightGBMConfig
    from hwnas.estimator.scoring import table_networks
    from hwnas.estimator.train import EvalConfig, score_estimator, train

    spec = load_spec("neural-engine-32")
    cfg = MicrobenchConfig(backend="onnxruntime", samples=60, repeats=2, warmup=1,
                           min_repeat_ms=0.1, spaces=SPACE, adaptive_share=0,
                           max_block_macs=3e7, calibration_networks=6)  # no 1-s random blocks
    table = run_microbench(cfg, spec)
    train(table, spec, "onnxruntime", LightGBMConfig(n_estimators=20), tmp_path / "est", "test")
    est = Estimator.load(tmp_path / "est", spec)
    assert est.manifest["host"]["onnxruntime"]
    earlier = table_networks(table)
    m = score_estimator(est, spec, "onnxruntime",
                        EvalConfig(eval_networks=4, references=False, repeats=2, warmup=1,
                                   min_repeat_ms=0.1, spaces=SPACE),
                        earlier=earlier, earlier_time=time.time() - 30)
    assert 0 <= m["test_retest_within_5pct"] <= m["test_retest_within_10pct"] <= 1
    assert m["networks"] == 4 and "limited_by" in m
    # the microbenchmarks' whole networks timed again: the repeatability across that time
    later = m["retest_later"]
    assert later["networks"] == len(earlier) == 6 and 0.5 <= later["minutes_apart"] < 5
    assert 0 <= later["within_5pct"] <= m["retest_later_within_10pct"] <= 1
    assert (m["_predictions"]["true_ms"] > 0).all()


def test_the_machine_limits_when_it_disagrees_with_itself_across_the_minutes():
    from hwnas.estimator.train import limit

    drifted = {"within_10pct": 0.733, "minutes_apart": 8.0}
    assert limit(0.751, 0.984, drifted).startswith("the machine:")  # 0.751 >= 0.9 x 0.733
    assert "8.0 min after the microbenchmarks is 73.3%" in limit(0.751, 0.984, drifted)
    assert limit(0.751, 0.984).startswith("the estimator:")  # back to back it agrees: 98.4%
    steady = {"within_10pct": 0.992, "minutes_apart": 3.1}
    assert limit(0.792, 1.0, steady).startswith("the estimator:")


# ---- a device team's plan --------------------------------------------------------------


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """A plan of 40 units and 6 networks, timed in ONNX Runtime as a stand-in device."""
    root = tmp_path_factory.mktemp("plan")
    params = yaml.safe_load(open("params.yaml"))
    params["microbench"]["onnxruntime"].update(calibration_networks=6, spaces=SPACE)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    folder = root / "plan"
    r = CliRunner().invoke(app, ["microbench", "--plan", "40", "--out", str(folder),
                                 "--params", str(root / "params.yaml")])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(folder / "timings_template.csv")))
    files = {u["unit_id"]: u["file"] for u in csv.DictReader(open(folder / "plan.csv"))}
    times = time_files([str(folder / files[r["unit_id"]]) for r in rows], QUICK)
    timings = root / "timings.csv"
    with open(timings, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["plan", "unit_id", "input_shape", "latency_ms"])
        for r, ts in zip(rows, times):
            w.writerows([r["plan"], r["unit_id"], r["input_shape"], f"{t:.6f}"] for t in ts)
    return folder, timings


def test_a_plan_timed_on_another_device_trains_an_estimator(plan, tmp_path):
    folder, timings = plan
    assert len(list((folder / "units").glob("*.onnx"))) == 46
    out = tmp_path / "imported"
    r = CliRunner().invoke(app, ["import-timings", str(timings), "--plan", str(folder),
                                 "--out", str(out), "--n-estimators", "20"])
    assert r.exit_code == 0, r.output
    est = Estimator.load(out)
    assert est.manifest["backend"] == "imported"
    table = read_timings(timings, folder)  # what it trained on: every timing, networks too
    assert len(table) == 2 * 46 and (table["kind"] == "network").sum() == 2 * 6
    planned = pd.read_csv(folder / "plan.csv")
    planned = planned[planned["role"] != "network"]
    kf = est.kernel_frame([decode(a) for a in planned["arch"]])
    own = kf[kf["unit"].to_numpy() == planned["unit"].to_numpy()[kf["net"]]]  # the timed units
    modelled = own[own["kind"].astype(str).isin(list(est.models))]
    assert len(modelled) >= 20 and (modelled["pred_ms"] > 0).all()


def _edit(timings, tmp_path, change):
    rows = list(csv.reader(open(timings)))
    change(rows)
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _set(row: int, col: int, value: str):
    def change(rows):
        rows[row][col] = value
    return change


@pytest.mark.parametrize("change, needle", [
    (lambda rows: [r.pop(3) for r in rows], "missing column 'latency_ms'"),
    (_set(2, 3, "-1.5"), "row 3, column 'latency_ms': -1.5 ms"),
    (_set(2, 3, "0"), "row 3, column 'latency_ms': 0 ms"),
    (_set(4, 3, "fast"), "row 5, column 'latency_ms': 'fast' is not a number"),
    (_set(2, 1, "u99999"), "row 3, column 'unit_id': 'u99999' is not a unit"),
    (_set(2, 2, "1x3xbig"), "row 3, column 'input_shape'"),
    (_set(2, 0, "0123456789abcdef"), "row 3, column 'plan': timings for plan"),
    (lambda rows: rows.append([rows[1][0], rows[1][1], "1x9x9x9", "1.0"]),
     "column 'input_shape': unit u00001 has shape 1x9x9x9 here but"),
])
def test_bad_timings_are_refused_before_anything_is_trained(plan, tmp_path, change, needle):
    folder, timings = plan
    bad = _edit(timings, tmp_path, change)
    out = tmp_path / "est"
    r = CliRunner().invoke(app, ["import-timings", str(bad), "--plan", str(folder),
                                 "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and str(bad) in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


# ---- a measured base.hardware: the pipeline's estimator stages and evaluate's judge ----------


def test_base_hardware_onnxruntime_makes_the_estimator_stages_measure_it():
    from hwnas.estimator.microbench import MicrobenchError, stage_target
    from hwnas.params import ParamsError, load_params, validate_params

    params = load_params()
    params["base"]["hardware"] = "onnxruntime"
    backend, p, spec, target = stage_target([], None, params, "microbench")
    assert (backend, target, spec.parallelism) == ("onnxruntime", "onnxruntime", 16)
    assert p["units"] == "profiled"  # the section's onnxruntime overrides applied
    with pytest.raises(MicrobenchError, match="onnxruntime is measured by onnxruntime, not sim"):
        stage_target(["--backend", "sim"], None, params, "microbench")  # its files' name
    params["base"]["hardware"] = "neural-engine-32"
    assert stage_target([], None, params, "train_estimator")[::3] == ("sim", "neural-engine-32")
    assert stage_target(["--backend", "onnxruntime"], None, params,  # a host target
                        "microbench")[::3] == ("onnxruntime", "onnxruntime")
    # a host target that is base.hardware already: two stages would write one estimator
    with pytest.raises(ParamsError, match="host_targets: onnxruntime is base.hardware"):
        validate_params({**params, "base": {**params["base"], "hardware": "onnxruntime"},
                         "host_targets": ["onnxruntime"]})


@pytest.mark.parametrize("args", [["simulate", "--hardware", "onnxruntime", "--arch",
                                   "tiny_conv_32"],
                                  ["references", "--hardware", "onnxruntime"],
                                  ["microbench", "--hardware", "onnxruntime", "--backend", "sim"]])
def test_a_measured_spec_is_not_simulated(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "measured by onnxruntime, not simulated" in result.output


def test_a_measured_spec_is_no_codesign_base():
    from hwnas.codesign.grid import GridError, specs

    grid = {"mac_array": [16], "vector_lanes": [16], "sram_kib": [2048],
            "dram_bandwidth_gb_s": [10], "fusion": [True]}
    with pytest.raises(GridError, match="codesign.base: onnxruntime is measured"):
        specs("onnxruntime", grid)
    assert specs("neural-engine-32", grid)  # a simulated base makes its points


def test_evaluate_on_a_measured_target_times_the_models(tmp_path):
    """The judge is a measurement: latency replaced by the rounds' timings, the estimator's
    error against them, no energy, each round's reduction in the metrics and the report."""
    from hardware.spec import load_spec
    from hwnas.evaluation.metrics import build_metrics, measure_models, judge_models
    from hwnas.evaluation.plots import plot
    from hwnas.evaluation.report import report

    spec = load_spec("onnxruntime")
    small, big = reference("tiny_conv_32"), reference("mobilenetv2_32")
    archs = {"latency": small, "memory": small, "baseline-scratch": big}
    cfg = {"rounds": 2, "repeats": 2, "warmup": 1, "min_repeat_ms": 0.5, "clock": "thread"}
    measured = measure_models(archs, cfg)
    for m in measured.values():
        rounds = np.array(m["latency_rounds_ms"])
        assert rounds.shape == (2,) and (rounds > 0).all()
        assert m["latency_ms"] == pytest.approx(np.sqrt(rounds.prod()))
        assert m["latency_spread"] == pytest.approx(np.abs(rounds / m["latency_ms"] - 1).max())
    assert measured["baseline-scratch"]["latency_ms"] > 3 * measured["latency"]["latency_ms"]

    def estimate(items):  # 20% above the measurement (the models in order)
        return [{"latency_ms": 1.2 * measured[n]["latency_ms"], "memory_bytes": 1,
                 "out_of_range": []} for n in archs]

    models = judge_models(archs, spec, estimate, measured)
    for name, m in models.items():
        assert m["latency_ms"] == measured[name]["latency_ms"] and m["energy_mj"] is None
        assert m["estimator_error"] == pytest.approx(0.2) and m["memory_bytes"] > 0
        m["score"] = 90.0
    metrics = build_metrics(models, ["baseline-scratch"])
    assert metrics["energy_reduction"] is None and metrics["latency_reduction"] > 0.6
    cuts = metrics["latency_reduction_rounds"]
    # the reduction of the rounds' geometric means lies between the rounds' own
    assert len(cuts) == 2 and min(cuts) - 1e-12 <= metrics["latency_reduction"] <= max(cuts) + 1e-12
    metrics.update(latency_judge="measured", models_latency_spread_max=0.01)
    text = report(metrics, models, [], {"hardware": "onnxruntime", "latency_judge": "measured",
                                        "measure": cfg, "bytes_per_element": 4})
    assert "Latency is measured" in text and "| measured latency (ms) |" in text
    assert "energy (mJ) |" not in text.split("## Memory")[0]  # no energy row in the headline
    assert "latency spread over the rounds" in text
    cands = pd.DataFrame([{"arch": a.encode(), "score": 90.0, "latency_ms": 1.0 + i}
                          for i, a in enumerate((small, big))])
    base = {"arch": big.key, "score": 90.0, "latency_ms": 2.0}
    plot(cands, base, {n: {**m, "est_latency_ms": 1.0, "search_score": 90.0}
                       for n, m in models.items()}, ["baseline-scratch"], tmp_path / "p.png",
         latency_col="latency_ms", metrics=metrics)
    assert (tmp_path / "p.png").stat().st_size > 1000
