"""The findings stage: the ablation's four spaces, the judge, and the stage end to end on a
tiny workspace (real searches on a trained supernet, real from-scratch runs)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import yaml

from hardware.spec import load_spec
from hwnas import layout
from hwnas.findings import ARTICLE, VARIANTS, FindingsError, plot_ablation, report, variant_space
from hwnas.search.genome import from_arch
from hwnas.space import SpaceConfig, curated_space
from test_kill_resume import _run, _workspace, template  # noqa: F401 (a fixture)

SPACE = curated_space(load_spec(), SpaceConfig(head_features=64, stem_stride=2,
                                               stages=((32, 1, 2), (64, 2, 2), (96, 2, 1)),
                                               expands=(1, 2, 4),
                                               depth_multipliers=(0.5, 1.0, 1.5),
                                               width_range=(0.5, 1.0)))


def test_the_four_spaces_hold_the_baseline_and_only_their_levers():
    base = SPACE.baseline([32, 64, 96])
    rng = np.random.default_rng(0)
    for name, depth, fused in VARIANTS:
        space = variant_space(SPACE, depth, fused)
        from_arch(space, base)  # every variant's search can start from the baseline
        nets = [space.sample(rng) for _ in range(40)]
        assert any(b.type == "fused_ibn" for n in nets for b in n.blocks) == fused, name
        depths = {len(n.blocks) for n in nets}
        assert (depths != {len(base.blocks)}) == depth, (name, depths)
    assert variant_space(SPACE, True, True) == SPACE
    with pytest.raises(FindingsError, match="no depth multiplier 1"):
        variant_space(replace(SPACE, depth_multipliers=(0.5, 1.5)), False, True)


def test_findings_stage_end_to_end(template, tmp_path):  # noqa: F811
    """Tiny budgets: the supernet, the pipeline's search and the baseline's two seeds first,
    then the stage: four searches, curation, the expert networks trained and judged; a
    rerun resumes every search and run from its journal (nothing trained again)."""
    ws = _workspace(template, tmp_path)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["baseline"].update(seeds=2, epochs=1)
    params["findings"].update(candidates=12, population=4, rules_from=[],
                              curation={"seeds": 2, "candidates": 12, "population": 4},
                              zeroshot={"networks": 4, "seeds": 2, "pool": 40, "keep": 6,
                                        "confirm": 2})
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("train_supernet", "search", "baseline"):
        _run(ws, stage)
    (ws / layout.EVALUATE).mkdir(parents=True)
    (ws / layout.EVALUATE / "metrics.json").write_text(json.dumps(
        {"shown_equal": False, "score_delta_ci95": [-1.5, 0.5]}))

    out = _run(ws, "findings")
    m = json.loads((ws / layout.FINDINGS / "metrics.json").read_text())
    runs = (ws / layout.FINDINGS / "runs.jsonl").read_text().splitlines()
    for name in ("v0", "v1", "v2", "v3"):
        row = m["ablation"][name]
        assert row["candidates"] == 12 and m[f"ablation.{name}.latency_reduction"] == row.get(
            "latency_reduction")
        if row["chosen"]:
            lo, hi = row["score_delta_ci95"]
            assert len(row["score_runs"]) == 2 and lo <= row["score_delta"] <= hi
            for kind in ("latency", "memory", "energy"):
                assert -1 < row[f"{kind}_reduction"] < 1, (name, kind)
    assert any(m["ablation"][name]["chosen"] for name in ("v0", "v1", "v2", "v3"))
    expert = m["expert"]["expert_only"]
    assert expert["rules"] and len(expert["score_runs"]) == 2
    assert m["expert_only.latency_reduction"] == expert["latency_reduction"] >= 0  # rules that pay
    assert m["curation"][0]["space"] == "curated" and m["curation"][0]["seeds"] == 2
    assert -1 <= m["flops_latency_spearman"] <= 1 and m["evaluate.shown_equal"] is False
    z = m["zeroshot"]
    assert z["ranking"]["networks"] == 4 and set(z["ranking"]["kendall_tau"]) == {
        "naswot", "synflow", "grad_norm", "params"}
    assert m["zeroshot.proxy"] == z["ranking"]["proxy"] in ("naswot", "synflow", "grad_norm")
    chain, oneshot = z["chain"], z["oneshot"]
    assert chain["pool"] == 40 and chain["kept"] == 6 and chain["drawn"] >= 40
    assert chain["total_seconds"] == pytest.approx(sum(chain["seconds"].values()), abs=0.2)
    # the one-shot search alone: the chain's seconds at the chain's cost per evaluation
    assert oneshot["candidates"] % 4 == 0 and oneshot["candidates"] == 4 * max(1, round(
        chain["total_seconds"] / chain["seconds_per_supernet_evaluation"] / 4))
    for arm in (chain, oneshot):
        assert not arm["chosen"] or len(arm["score_runs"]) == 2
    text = (ws / layout.FINDINGS / "report.md").read_text()
    assert "## Ablation: four searches of equal budget" in text and "| V3 |" in text
    assert "| one-shot alone |" in text and "(the chain uses it)" in text
    assert (ws / layout.FINDINGS / "ablation.png").stat().st_size > 1000
    assert "training" in out
    trained = len(runs)

    again = _run(ws, "findings")
    assert "training" not in again  # every run from runs.jsonl, every search from its journal
    assert len((ws / layout.FINDINGS / "runs.jsonl").read_text().splitlines()) == trained
    m2 = json.loads((ws / layout.FINDINGS / "metrics.json").read_text())
    assert {k: v for k, v in m2.items() if k != "seconds"} == {
        k: v for k, v in m.items() if k != "seconds"}


def test_curation_counts_evaluations_to_the_common_and_to_its_own_final_value():
    import pandas as pd

    from hwnas.experiments import curation_table

    curves = pd.DataFrame(
        [{"space": "curated", "seed": s, "evaluations": i + 1, "best_latency_ms": v}
         for s, run in enumerate(([4.0, 2.0, 1.0, 1.0], [4.0, 3.0, 3.0, 1.04]))
         for i, v in enumerate(run)]
        + [{"space": "uncurated", "seed": 0, "evaluations": i + 1, "best_latency_ms": v}
           for i, v in enumerate([5.0, 2.0, 2.0, 2.0])])
    t = curation_table(curves).set_index("space")
    assert t.loc["curated", "median_evaluations_to_tolerance"] == 3.5  # 3 and 4 (1.04 <= 1.05)
    assert t.loc["curated", "median_evaluations_to_own_final"] == 3.5
    assert pd.isna(t.loc["uncurated", "median_evaluations_to_tolerance"])  # never near 1.0
    assert t.loc["uncurated", "median_evaluations_to_own_final"] == 2.0


def test_report_and_plot_show_every_row(tmp_path):
    row = {"latency_reduction": 0.4, "memory_reduction": 0.2, "energy_reduction": 0.1,
           "score_delta": -0.2, "score_delta_se": 0.1, "score_delta_ci95": [-0.6, 0.2],
           "equal_margin": 0.5, "shown_equal": False, "score_runs": [1, 2]}
    ab = {name: {**row, "depth_multiplier": d, "fused_ibn": f, "candidates": 10}
          for name, d, f in VARIANTS}
    ab["v0"] = {"depth_multiplier": False, "fused_ibn": False, "candidates": 10, "chosen": None}
    m = {"ablation": ab, "expert": {"expert_only": {**row, "rules": [{"fuse_ibn": {}}],
                                                    "changed": True}},
         "curation": [{"space": "curated", "seeds": 2, "median_best_latency_ms": None,
                       "worst_best_latency_ms": None, "runs_within_tolerance": 0,
                       "median_evaluations_to_tolerance": None,
                       "median_evaluations_to_own_final": 40.0}],
         "curation.evaluations_ratio": None, "curation.best_latency_ratio": None,
         "flops": {"networks": 5, "flops_latency_spearman": 0.8, "params_latency_spearman": 0.9,
                   "misordered_pair_share": 0.1, "pairs": [], "stages": []},
         "evaluate.score_delta_ci95": None,
         "zeroshot": {"ranking": {"networks": 20, "seeds": 2, "seed_to_seed_tau": 0.7,
                                  "kendall_tau": {"naswot": 0.1, "synflow": None,
                                                  "grad_norm": 0.3, "params": 0.2},
                                  "proxy": "grad_norm"},
                      "chain": {**row, "drawn": 900, "pool": 100, "kept": 10,
                                "confirmations": [{}, {}], "total_seconds": 33.0,
                                "seconds": {"proxy": 1.0, "supernet": 2.0, "confirm": 30.0}},
                      "oneshot": {"candidates": 800, "chosen": None}}}
    text = report(m, "top-1 accuracy", "neural-engine-32", 0.5, 2)
    assert "| grad_norm (the chain uses it) | +0.300 |" in text and "| synflow | - |" in text
    assert "No proxy ranks these networks" in text  # 0.30 is under two standard errors (0.33)
    assert "| zero-shot (grad_norm) -> one-shot -> multishot | 10 | 2 | 33 | 40.0% |" in text
    assert "| one-shot alone | 800 | 0 | ~33 | - | - | - | no network at the baseline's" in text
    assert "| V0 | no | no | 10 | - | 0.0% |" in text and "no network at the baseline's" in text
    assert f"| V3 | yes | yes | 10 | 40.0% | {100 * ARTICLE['v3']:.1f}% |" in text
    assert "-0.20 ± 0.10 [-0.60, +0.20] | not shown equal |" in text
    assert "| expert only | fuse_ibn | 40.0% | 50.0% |" in text
    assert "| curated | 2 | - | - | 40 | 0 | - |" in text
    plot_ablation(m, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000
