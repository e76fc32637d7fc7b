"""Where FLOPs mislead on the accelerator (``hwnas experiment flops``): rank correlations and
misordered pairs, fused-IBN share per stage, and a stage's block as IBN and as fused-IBN."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from hardware.spec import load_spec
from hwnas.experiments import block_latency_by_stage, flops_ranking, fused_share_by_stage
from hwnas.simulation import simulate_arch
from hwnas.space import SpaceConfig, curated_space

SPEC = load_spec()
SPACE = curated_space(SPEC, SpaceConfig(head_features=64, stem_stride=2,
                                        stages=((32, 1, 2), (64, 2, 2), (96, 2, 1)),
                                        expands=(1, 2, 4), depth_multipliers=(0.5, 1.0, 1.5),
                                        width_range=(0.5, 1.0)))


def test_misordered_pairs_are_what_flops_gets_wrong_on_the_simulator():
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(40)]
    stats, pairs = flops_ranking(archs, SPEC, top=3)
    sim = {a.key: simulate_arch(a, SPEC, per_kernel=False) for a in archs}
    assert stats["networks"] == 40 and -1 <= stats["flops_latency_spearman"] <= 1
    assert 0 < stats["misordered_pair_share"] < 0.5
    assert len(pairs) == 3 and list(pairs["latency_ratio"]) == sorted(pairs["latency_ratio"],
                                                                      reverse=True)
    for p in pairs.itertuples():
        a, b = sim[p.fewer_flops], sim[p.more_flops]
        assert a["flops"] < b["flops"] and a["latency_ms"] > b["latency_ms"]
        assert p.latency_ratio == pytest.approx(a["latency_ms"] / b["latency_ms"])


def test_fused_share_per_stage_and_block_latency_by_stage():
    base = SPACE.baseline([32, 64, 96])  # all IBN
    fused = SPACE.build(32, [(32, [("fused_ibn", 3, 4)]), (64, [("ibn", 3, 4)] * 2),
                             (96, [("ibn", 3, 4)] * 2)])
    assert fused_share_by_stage([base, fused], SPACE) == [0.5, 0.0, 0.0]
    stages = block_latency_by_stage(base, SPACE, SPEC)
    assert list(stages["stage"]) == [1, 2, 3] and list(stages["out"]) == [32, 64, 96]
    assert list(stages["fused_over_ibn"]) == pytest.approx(
        list(stages["fused_ibn_ms"] / stages["ibn_ms"]))
    # the article's finding on the default NPU: fused IBN pays early and costs late
    ratio = list(stages["fused_over_ibn"])
    assert ratio[0] < 1 < ratio[-1] and ratio == sorted(ratio)


def test_without_candidates_the_experiment_is_one_line(tmp_path, monkeypatch):
    from hwnas.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["experiment", "flops"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "supernet" in result.output
