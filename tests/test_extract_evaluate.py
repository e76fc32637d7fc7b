"""Extract, baseline and evaluate on a tiny space and scikit-learn's digits: the pure
functions end to end, the ONNX export, the metrics keys and the bad-input errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from hardware.spec import load_spec
from hwnas import layout
from hwnas.arch import ArchSpec, BlockSpec, StemSpec, validate
from hwnas.data import Loader, load_dataset
from hwnas.evaluation import EvaluateError
from hwnas.evaluation.ablation import ablation_table, uses_depth_search, uses_fused
from hwnas.evaluation.metrics import TARGETS, build_metrics, judge_models
from hwnas.evaluation.plots import plot
from hwnas.evaluation.report import report
from hwnas.extract import (Data, ExtractError, FineTune, export_onnx, keep_better, load_subnet,
                           materialize, pick_subnets, read_pareto, save_subnet, search_record,
                           train_scratch)
from hwnas.space import SpaceConfig, curated_space
from hwnas.supernet import SuperNet
from hwnas.training import TrainConfig

SPEC = "neural-engine-32"
# two stages; depth multipliers give per-stage depths (1, 1), (1, 2), (2, 3)
TINY = SpaceConfig(resolution=16, in_channels=1, classes=10, head_features=32, stem_stride=2,
                   stages=((32, 1, 2), (64, 2, 1)), kernels=(3, 5), expands=(1, 2),
                   depth_multipliers=(0.5, 1.0, 1.5), width_range=(0.5, 1.0))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def spec():
    return load_spec(SPEC)


@pytest.fixture(scope="module")
def space(spec):
    return curated_space(spec, TINY)


@pytest.fixture(scope="module")
def supernet(space):
    torch.manual_seed(0)
    return SuperNet(space).eval()


@pytest.fixture(scope="module")
def data():
    splits = load_dataset("digits", 16, 0, 0.1, 0.2)
    cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, warmup_epochs=0.0)
    return Data(train=lambda: Loader(splits.train, 128, shuffle=True, max_shift=1, seed=0,
                                     drop_last=True),
                calib=Loader(splits.train, 256, shuffle=True, seed=1),
                test=Loader(splits.test, 256), train_config=cfg, val=Loader(splits.val, 256))


def _arch(space, blocks) -> ArchSpec:
    return validate(ArchSpec(stem=StemSpec(32, 3, 2), blocks=tuple(blocks), head=space.head,
                             input=space.input))


@pytest.fixture(scope="module")
def archs(space):
    base = space.baseline([32, 64]).with_name("")
    fast = _arch(space, [BlockSpec("fused_ibn", 3, 32, 2, 1), BlockSpec("ibn", 3, 32, 1, 1)])
    deep = _arch(space, [BlockSpec("ibn", 3, 32, 2, 2), BlockSpec("ibn", 3, 32, 1, 2),
                         BlockSpec("ibn", 5, 64, 1, 1), BlockSpec("ibn", 3, 64, 1, 1),
                         BlockSpec("ibn", 3, 64, 1, 1)])
    return {"baseline": base, "fast": fast, "deep": deep}


def _pareto(archs, latency="fast", memory="fast") -> dict:
    row = lambda a, acc, lat, mem: {"arch": a.encode(), "score": acc,  # noqa: E731
                                    "latency_ms": lat, "memory_bytes": mem}
    return {"hardware": SPEC, "score_mode": "supernet",
            "baseline": row(archs["baseline"].with_name("baseline"), 70.0, 0.05, 300000),
            "chosen": {"latency": latency and archs[latency].encode(),
                       "memory": memory and archs[memory].encode()},
            "pareto": [row(archs["fast"], 75.0, 0.02, 100000),
                       row(archs["deep"], 80.0, 0.04, 200000)]}


# ---- reading the search's output ----------------------------------------------------------


def test_missing_pareto_names_the_file(tmp_path):
    with pytest.raises(ExtractError, match="pareto.json: not found"):
        read_pareto(tmp_path / "pareto.json")


def test_malformed_pareto_names_the_file_and_key(tmp_path):
    path = tmp_path / "pareto.json"
    path.write_text("{not json")
    with pytest.raises(ExtractError, match=f"{path}: cannot read as JSON"):
        read_pareto(path)
    path.write_text(json.dumps({"baseline": {"arch": "x"}, "pareto": []}))
    with pytest.raises(ExtractError, match="missing key 'chosen'"):
        read_pareto(path)


def test_null_choice_names_the_file_and_key(archs):
    with pytest.raises(ExtractError, match=r"pareto.json: chosen.latency is null"):
        pick_subnets(_pareto(archs, latency=None), ("latency", "memory"), source="pareto.json")
    with pytest.raises(ExtractError, match=r"results/x.json: chosen.memory is null"):
        pick_subnets(_pareto(archs, memory=None), ("memory",), source="results/x.json")
    # only what is asked for must be present
    assert list(pick_subnets(_pareto(archs, memory=None), ("latency",))) == ["latency"]
    # a family member with no candidate in its band is left out, the others kept
    family = _pareto(archs)
    family["chosen"].update(A=None, B=archs["deep"].encode())
    assert list(pick_subnets(family, ("latency", "A", "B"))) == ["latency", "B"]


def test_pick_subnets_adds_distinct_pareto_networks(archs):
    picked = pick_subnets(_pareto(archs), ("latency", "memory"), extra=3)
    assert list(picked) == ["latency", "memory", "pareto-1"]
    assert picked["pareto-1"] == archs["deep"]           # "fast" is already chosen
    assert search_record(_pareto(archs), archs["baseline"])["score"] == 70.0


def test_search_score_of_a_chosen_network_off_the_front(archs):
    from hwnas.evaluation.run import fill_search_score

    p = _pareto(archs)
    off_front = archs["deep"].with_name("")
    p["pareto"] = p["pareto"][:1]  # "deep" is chosen but not on the front
    assert search_record(p, off_front) == {}
    p["chosen_scores"] = {"latency": {"arch": off_front.encode(), "score": 81.0,
                                      "latency_ms": 0.04, "memory_bytes": 200000}}
    assert search_record(p, off_front)["score"] == 81.0
    # evaluate fills what extract lacks from the candidates, the baseline from pareto.json
    records = {"latency": {"arch": off_front.encode()}, "pareto-1": {"search_score": 75.0},
               "baseline-scratch": {}}
    names = {"latency": off_front, "pareto-1": archs["fast"], "baseline-scratch": archs["baseline"]}
    cands = pd.DataFrame({"arch": [off_front.encode(), archs["fast"].encode()],
                          "score": [81.0, 99.0]})
    fill_search_score(records, names, cands, p)
    assert [r["search_score"] for r in records.values()] == [81.0, 75.0, 70.0]


def test_bad_arch_string_names_the_entry(archs):
    p = _pareto(archs)
    p["chosen"]["latency"] = "i1x16x16-nonsense"
    with pytest.raises(ExtractError, match="chosen.latency"):
        pick_subnets(p, ("latency",), source="pareto.json")


# ---- extraction, fine-tuning, persistence, ONNX -------------------------------------------


def test_materialize_save_load_and_onnx(supernet, archs, data, tmp_path):
    net, rec = materialize(supernet, archs["fast"], data, FineTune(epochs=1, lr=0.05), seed=0)
    assert 0.0 <= rec["inherited_score"] <= 100.0 and 0.0 <= rec["score"] <= 100.0
    assert rec["score"] > 20.0                       # one epoch on digits learns something
    assert rec["arch"] == archs["fast"].encode() and rec["params"] > 0
    save_subnet(net, archs["fast"], tmp_path / "fast.pt", rec)
    again, arch = load_subnet(tmp_path / "fast.pt")
    assert arch == archs["fast"]
    x = next(iter(data.test))[0][:16]
    with torch.no_grad():
        assert torch.allclose(net(x), again(x), atol=1e-6)
    diff = export_onnx(net, tmp_path / "fast.onnx", x)
    assert (tmp_path / "fast.onnx").is_file()
    assert diff < 1e-4


def test_arch_outside_the_supernet_is_a_clear_error(supernet, space, data):
    wide = _arch(space, [BlockSpec("ibn", 3, 96, 2, 1), BlockSpec("ibn", 3, 64, 1, 1)])
    with pytest.raises(ExtractError, match="not in the supernet's space"):
        materialize(supernet, wide, data, FineTune(epochs=0))


def test_train_scratch_reports_budget(archs, data):
    net, rec = train_scratch(archs["fast"], data, data.train_config, seed=0)
    assert rec["epochs"] == 1 and 0.0 <= rec["score"] <= 100.0
    assert 0.0 <= rec["val_score"] <= 100.0
    assert next(net.parameters()).device == torch.device(data.device)  # where the batches are


def test_keep_better_chooses_on_val_never_test():
    ft, sc = object(), object()
    frec = {"score": 90.0, "val_score": 95.0, "inherited_score": 80.0}
    srec = {"score": 99.0, "val_score": 94.0, "epochs": 9, "train_seconds": 1.0}
    net, rec = keep_better((ft, frec), (sc, srec))   # better on test, worse on val: not kept
    assert net is ft and rec["weights"] == "finetuned" and rec["score"] == 90.0
    assert rec["scratch_score"] == 99.0 and rec["finetuned_score"] == 90.0
    net, rec = keep_better((ft, frec), (sc, {**srec, "val_score": 96.0}))
    assert net is sc and rec["weights"] == "scratch" and rec["score"] == 99.0
    assert rec["finetuned_score"] == 90.0 and rec["inherited_score"] == 80.0
    net, _ = keep_better((ft, frec), (sc, {**srec, "val_score": 95.0}))  # a tie
    assert net is ft
    runs = {**srec, "val_score": 96.0, "score": 98.5, "model_score": 98.0,
            "score_runs": [98.0, 99.0]}            # several seeds: the mean and the saved run
    _, rec = keep_better((ft, frec), (sc, runs))
    assert rec["score"] == 98.0 and rec["scratch_score"] == 98.5
    assert rec["scratch_score_runs"] == [98.0, 99.0]


# ---- evaluation ---------------------------------------------------------------------------


def test_depth_and_fused_flags(space, archs):
    assert space.split(archs["baseline"]) == (1.0, (1, 2))
    assert not uses_depth_search(archs["baseline"], space)
    assert uses_depth_search(archs["fast"], space)      # (1, 1): multiplier 0.5
    assert uses_depth_search(archs["deep"], space)      # (2, 3): multiplier 1.5
    assert uses_fused(archs["fast"]) and not uses_fused(archs["deep"])


def test_simulate_models_simulates_and_scores_the_estimator(spec, archs):
    def estimate(items):  # a fake estimator 10% slow and exact on memory
        from hwnas.simulation import simulate_arch
        return [{"latency_ms": 1.1 * (s := simulate_arch(a, spec, per_kernel=False))["latency_ms"],
                 "memory_bytes": s["memory_bytes"], "out_of_range": []} for a in items]

    out = judge_models(archs, spec, estimate)
    for rec in out.values():
        assert rec["latency_ms"] > 0 and rec["energy_mj"] > 0 and rec["memory_bytes"] > 0
        assert rec["estimator_error"] == pytest.approx(0.1)
        assert rec["estimator_memory_error"] == 0.0


def _models(spec, archs, fast_score=97.0):
    sims = judge_models(archs, spec)
    return {"latency": {**sims["fast"], "score": fast_score, "test_images": 1000},
            "memory": {**sims["fast"], "score": 96.0},
            "baseline-scratch": {**sims["baseline"], "score": 97.2},
            "baseline-finetuned": {**sims["baseline"], "score": 96.5}}


def test_metrics_keys_and_targets(spec, archs):
    models = _models(spec, archs)
    m = build_metrics(models, ["baseline-scratch", "baseline-finetuned"])
    for key in ("score", "baseline_score", "latency_ms", "baseline_latency_ms",
                "latency_reduction", "memory_bytes", "baseline_memory_bytes",
                "memory_reduction", "estimator_error", "energy_mj", "memory_model", "targets"):
        assert key in m, key
    assert m["baseline_score"] == 97.2 and m["baseline_score_source"] == "baseline-scratch"
    assert m["latency_reduction"] == pytest.approx(1 - models["latency"]["latency_ms"]
                                                   / models["baseline-scratch"]["latency_ms"])
    assert 0 < m["latency_reduction"] < 1 and 0 < m["memory_reduction"] < 1
    assert m["targets"]["latency_met"] == (m["latency_reduction"] >= TARGETS["latency_reduction"])
    assert m["targets"]["memory_met"] is False          # 1.2 points below the baseline
    assert math.isclose(m["score_se"], 100 * math.sqrt(0.97 * 0.03 / 1000))
    json.dumps(m)                                        # serializable as written
    assert m["score_basis"] == "saved weights" and "model_score" not in m
    # trained from scratch too: architecture against architecture, means of paired seeds
    models["latency"].update(scratch_score=97.5, scratch_score_runs=[97.4, 97.6],
                             weights="finetuned", finetuned_score=97.0)
    models["baseline-scratch"]["score_runs"] = [97.3, 97.1]
    models["baseline-finetuned"]["score"] = 97.9  # stronger, but another recipe: not used
    m = build_metrics(models, ["baseline-scratch", "baseline-finetuned"])
    assert m["score_basis"] == "scratch" and m["baseline_score_source"] == "baseline-scratch"
    assert m["score"] == 97.5 and m["model_score"] == 97.0 and m["weights"] == "finetuned"
    assert m["score_delta"] == pytest.approx(0.3)
    assert m["model_score_delta"] == pytest.approx(97.0 - 97.2)  # the saved files, one run each
    assert m["score_delta_se"] == pytest.approx(0.2)  # paired diffs 0.1, 0.5: sd 0.28 / sqrt 2
    assert m["targets"]["latency_met"] == (m["latency_reduction"] >= 0.5)
    assert m["memory_model"]["score"] == 96.0  # no from-scratch runs: its saved weights
    # two runs: t(0.975, 1) = 12.71 standard errors either side: +0.3 +- 2.54, not equal
    assert m["score_delta_ci95"] == pytest.approx([0.3 - 2.542, 0.3 + 2.542], abs=1e-3)
    assert m["shown_equal"] is False and m["equal_margin"] == 0.5
    assert m["memory_model"]["shown_equal"] is False  # no runs: no interval
    text = report(m, models, [], {"hardware": SPEC})
    assert "both trained from scratch" in text and "kept: **finetuned**" in text
    assert ("latency model: **not shown equal** within the 0.5-point margin (95% interval "
            "[-2.24, +2.84] points over 2 paired seeds)") in text
    assert "memory model: not shown equal (no interval" in text
    # five seeds, differences -0.2 +- 0.1: the interval [-0.32, -0.08] clears -0.5, not -0.3
    models["latency"]["scratch_score_runs"] = [97.0, 97.2, 96.9, 97.1, 97.05]
    models["baseline-scratch"]["score_runs"] = [97.2, 97.3, 97.2, 97.2, 97.35]
    assert build_metrics(models, ["baseline-scratch"])["shown_equal"] is True
    assert build_metrics(models, ["baseline-scratch"], margin=0.3)["shown_equal"] is False
    worse = build_metrics(_models(spec, archs, fast_score=96.8), ["baseline-scratch"])
    assert worse["targets"]["latency_met"] is False      # 0.4 points below


def test_metrics_missing_model_is_named(spec, archs):
    models = _models(spec, archs)
    del models["memory"]
    with pytest.raises(EvaluateError, match="'memory'"):
        build_metrics(models, ["baseline-scratch"])
    assert "memory_model" not in build_metrics(models, ["baseline-scratch"], memory_name=None)


def test_ablation_table_restricts_the_candidates(spec, space, archs):
    sims = judge_models(archs, spec)
    cands = pd.DataFrame([
        {"arch": archs["fast"].encode(), "score": 72.0, "feasible": True,
         "sim_latency_ms": sims["fast"]["latency_ms"]},
        {"arch": archs["deep"].encode(), "score": 71.0, "feasible": True,
         "sim_latency_ms": sims["deep"]["latency_ms"]},
        {"arch": archs["deep"].encode(), "score": 99.0, "feasible": False,  # infeasible: out
         "sim_latency_ms": 1e-6}])
    base = {"arch": archs["baseline"].encode(), "score": 70.0,
            "sim_latency_ms": sims["baseline"]["latency_ms"]}
    rows = {(r["fused_ibn_search"], r["depth_multiplier_search"]): r
            for r in ablation_table(cands, base, space)}
    assert rows[(False, False)]["is_baseline"] and rows[(False, False)]["latency_reduction"] == 0
    assert rows[(True, True)]["arch"] == archs["fast"].encode()     # fused and shallower
    assert rows[(True, True)]["latency_reduction"] > 0
    no_fused = rows[(False, True)]
    assert no_fused["arch"] in (archs["deep"].encode(), base["arch"])
    # the full search is at least as good as any restriction
    assert all(rows[(True, True)]["latency_reduction"] >= r["latency_reduction"]
               for r in rows.values())
    # a stricter score bar leaves only the baseline
    strict = ablation_table(cands.assign(score=60.0), base, space)
    assert all(r["is_baseline"] for r in strict)




def test_report_and_plot(tmp_path, spec, space, archs):
    models = _models(spec, archs)
    m = build_metrics(models, ["baseline-scratch", "baseline-finetuned"])
    cands = pd.DataFrame([{"arch": a.encode(), "score": 70.0 + i, "feasible": True,
                           "sim_latency_ms": models["latency"]["latency_ms"] * (1 + i)}
                          for i, a in enumerate(archs.values())])
    base = {"arch": archs["baseline"].encode(), "score": 70.0,
            "sim_latency_ms": models["baseline-scratch"]["latency_ms"]}
    table = ablation_table(cands, base, space)
    text = report(m, models, table, {"hardware": SPEC, "test_images": 1000, "dataset": "digits"})
    assert "| fused-IBN search |" in text and "## Targets\n" in text and "pareto.png" in text
    assert "issue" not in text.lower()  # the tracker's numbers are no part of the report
    plot(cands, base, models, ["baseline-scratch", "baseline-finetuned"], tmp_path / "p.png",
         metrics=m)
    assert (tmp_path / "p.png").stat().st_size > 1000


# ---- the stages' bad input ----------------------------------------------------------------


def _params_yaml() -> str:
    """The repo's params.yaml with a short extract and no scratch runs."""
    import yaml

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    params["extract"].update(pareto_extra=0, baseline=False, scratch=False, epochs=1,
                             onnx_check_images=8)
    return yaml.safe_dump(params)


def test_extract_stage_missing_or_null_input(tmp_path, monkeypatch, archs):
    import stages.extract as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(_params_yaml())
    with pytest.raises(ExtractError, match=r"results/classification/search/pareto.json: not found"):
        stage.main()
    (tmp_path / layout.SEARCH).mkdir(parents=True)
    (tmp_path / layout.PARETO).write_text(json.dumps(_pareto(archs, latency=None)))
    with pytest.raises(ExtractError,
                       match=r"results/classification/search/pareto.json: chosen.latency is null"):
        stage.main()


def test_extract_stage_refuses_a_network_of_another_task(tmp_path, monkeypatch, archs, supernet):
    """A detector chosen for a classifier's supernet and data: one line, before training."""
    from dataclasses import replace

    import stages.extract as stage
    from hwnas.supernet import supernet_state
    from hwnas.tasks.detection.head import DetectionHead

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(_params_yaml())
    layout.SUPERNET.parent.mkdir(parents=True)
    torch.save(supernet_state(supernet), layout.SUPERNET)
    detector = replace(archs["fast"], head=DetectionHead(64, 1, 4))
    (tmp_path / layout.SEARCH).mkdir(parents=True)
    (tmp_path / layout.PARETO).write_text(json.dumps(
        {**_pareto(archs), "chosen": {"latency": detector.encode(), "memory": detector.encode()}}))
    monkeypatch.setattr("hwnas.extract.materialize", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ExtractError, match=r"pareto.json: chosen network 'latency': head "
                                           r"det_f64_n1_s4 does not match"):
        stage.main()


def test_evaluate_stage_missing_input(tmp_path, monkeypatch, archs):
    import stages.evaluate as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(_params_yaml())
    (tmp_path / layout.SEARCH).mkdir(parents=True)
    (tmp_path / layout.PARETO).write_text(json.dumps(_pareto(archs)))
    with pytest.raises(EvaluateError, match=r"candidates.parquet: not found"):
        stage.main()
    pd.DataFrame([{"arch": archs["fast"].encode(), "score": 1.0, "latency_ms": 0.1}]).to_parquet(
        tmp_path / layout.CANDIDATES)
    with pytest.raises(EvaluateError, match=r"results/classification/extract/subnets.json: not found"):
        stage.main()


def test_stage_params_are_checked():
    import yaml

    from hwnas.params import ParamsError, validate_params
    from hwnas.scratch import budget_epochs

    params = yaml.safe_load(_params_yaml())
    assert budget_epochs(params)[0] == 7                 # 6 supernet + 1 fine-tuning epochs
    params["baseline"]["epochs"] = 3
    assert budget_epochs(params)[0] == 3
    for section, key, bad in (("extract", "chosen", ["speed"]), ("extract", "lr", 0),
                              ("extract", "epochs", -1), ("baseline", "epochs", 0),
                              ("baseline", "seeds", 0), ("evaluate", "equal_score_tolerance", -1),
                              ("evaluate", "non_inferiority_margin", -0.5)):
        broken = yaml.safe_load(_params_yaml())
        broken[section][key] = bad
        with pytest.raises(ParamsError, match=f"{section}.{key}"):
            validate_params(broken)


def test_scratch_runs_average_seeds_in_worker_processes(archs):
    from hwnas.context import train_context
    from hwnas.params import section
    from hwnas.scratch import scratch_runs

    params = {"base": {"seed": 0, "hardware": SPEC}, "baseline": {"epochs": 1, "seeds": 2},
              "train_supernet": {
                  "device": "cpu", "threads": 1,
                  "data": {"dataset": "digits", "resolution": 16, "val_fraction": 0.1,
                           "test_fraction": 0.2},
                  "space": {"head_features": 32, "stem_stride": 2, "kernels": [3, 5],
                            "expands": [1, 2], "stages": [[32, 1, 2], [64, 2, 1]],
                            "depth_multipliers": [0.5, 1.0, 1.5], "width_range": [0.5, 1.0]},
                  "train": {"epochs": 6, "batch_size": 64, "lr": 0.1}}}
    ctx = train_context(section(params, "train_supernet"))
    net, rec = scratch_runs(params, ctx, archs["fast"])
    assert rec["seeds"] == [0, 1] and len(rec["score_runs"]) == 2
    assert rec["score"] == pytest.approx(sum(rec["score_runs"]) / 2, abs=1e-3)
    best = rec["val_score_runs"].index(max(rec["val_score_runs"]))  # saved: best on val
    assert rec["model_score"] == rec["score_runs"][best] and rec["model_seed"] == best
    assert rec["val_score"] == max(rec["val_score_runs"]) and rec["epochs"] == 1
    x = torch.zeros(2, 1, 16, 16)
    assert net(x).shape == (2, 10) and not net.training  # the saved run's model, ready to use
    params["baseline"]["seeds"] = 1                      # in-process: the same first run
    _, one = scratch_runs(params, ctx, archs["fast"])
    assert one["score_runs"] == rec["score_runs"][:1]
