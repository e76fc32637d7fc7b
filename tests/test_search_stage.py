"""Search objectives, the baseline, feasibility checks, summaries and multishot fan-out."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hardware.spec import load_spec
from hwnas.simulation import simulate_arch
from hwnas.search.evolution import Constraints
from hwnas.search.genome import from_arch
from hwnas.search.objectives import (SearchInputError, check_feasible, make_objective_fn,
                                     proxy_score)
from hwnas.space import SpaceConfig, curated_space
from hwnas.search.choice import confirmation_set, pick, summarize, tie_points

SPEC = load_spec()
CFG = SpaceConfig(head_features=64, stem_stride=2, stages=((32, 1, 2), (64, 2, 2), (96, 2, 1)),
                  expands=(1, 2, 4), depth_multipliers=(0.5, 1.0, 1.5), width_range=(0.5, 1.0))
SPACE = curated_space(SPEC, CFG)


def estimate(archs):
    return [{**simulate_arch(a, SPEC, per_kernel=False), "out_of_range": []} for a in archs]


def test_baseline_is_mobilenetv2_like_and_in_the_space():
    base = SPACE.baseline([32, 64, 96])
    assert {b.type for b in base.blocks} == {"ibn"} and {b.kernel for b in base.blocks} == {3}
    assert {b.expand for b in base.blocks} == {4}
    assert [b.out for b in base.blocks] == [32, 64, 64, 96, 96]
    from_arch(SPACE, base)  # the search can start from it


def test_infeasible_constraints_stop_before_searching():
    fastest = min(r["latency_ms"] for r in estimate(SPACE.cheapest()))
    check_feasible(SPACE, estimate, Constraints(max_latency_ms=fastest * 1.01))
    with pytest.raises(SearchInputError, match="infeasible: search.max_latency_ms"):
        check_feasible(SPACE, estimate, Constraints(max_latency_ms=fastest * 0.5))
    with pytest.raises(SearchInputError, match="memory budget"):
        check_feasible(SPACE, estimate, Constraints(max_memory_bytes=10))


def test_evaluator_scores_batches_with_a_proxy():
    x, y = torch.randn(16, 1, 32, 32), torch.randint(0, 10, (16,))
    proxy = proxy_score("naswot", x, y, seed=0)
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(3)]
    rows = make_objective_fn(lambda batch: [proxy(a) for a in batch], estimate)(archs)
    assert [r["latency_ms"] for r in rows] == [e["latency_ms"] for e in estimate(archs)]
    assert all(np.isfinite(r["score"]) for r in rows)
    assert proxy(archs[0]) == rows[0]["score"]  # seeded: the same score again
    with pytest.raises(SearchInputError, match="unknown proxy"):
        proxy_score("vibes", x, y, 0)


def test_summary_figures():
    df = pd.DataFrame({"arch": list("abcd"), "score": [90.0, 91.0, 80.0, 89.5],
                       "latency_ms": [1.0, 0.4, 0.1, 0.9], "memory_bytes": [100, 60, 20, 45],
                       "feasible": True, "pareto": [False, True, True, True]})
    base = {"score": 90.0, "latency_ms": 1.0, "memory_bytes": 100}
    s = summarize(df, base, None)
    assert s["front_latency_reduction_at_baseline_score"] == pytest.approx(0.6)
    assert s["_fastest"] == "b" and s["_smallest"] == "d"
    assert s["memory_reduction_within_budget"] == pytest.approx(0.55)
    from hwnas.search.run import describe
    assert describe(s).startswith("Pareto front (3 networks): -60.0% estimated latency vs the "
                                  "baseline at its supernet score (90.0%) or better; chosen "
                                  "latency model: -60.0% at 91.0% supernet score.")
    # with a latency budget the chosen model is the most accurate network within it
    s = summarize(df, base, None, latency_budget=0.95)
    assert s["_fastest"] == "b" and s["chosen_latency_reduction"] == pytest.approx(0.6)
    df.loc[0, ["score", "latency_ms"]] = [95.0, 0.9]
    assert summarize(df, base, None, latency_budget=0.95)["_fastest"] == "a"


def test_ties_within_the_score_noise_go_to_the_most_macs():
    # 95% on 500 images: one binomial standard error is 0.97 points
    assert tie_points(95.0, 500, 1.0) == pytest.approx(0.975, abs=1e-3)
    assert tie_points(95.0, 500, 0.0) == 0.0 and tie_points(95.0, 0, 2.0) == 0.0  # nothing to tie
    df = pd.DataFrame({"arch": list("abcd"), "score": [95.0, 94.2, 93.0, 94.2],
                       "macs": [1e6, 3e6, 9e6, 3e6], "latency_ms": [0.4, 0.45, 0.4, 0.3],
                       "memory_bytes": [40, 45, 30, 20], "feasible": True, "pareto": True})
    assert pick(df)["arch"] == "a"                   # no tie: the most accurate
    assert pick(df, 1.0)["arch"] == "b"              # b and d tie on MACs: the order is stable
    assert pick(df, 2.5)["arch"] == "c"              # c is within 2.5 points: most MACs
    assert pick(df.iloc[:0], 1.0) is None
    base = {"score": 90.0, "latency_ms": 1.0, "memory_bytes": 100}
    s = summarize(df, base, None, latency_budget=0.5, tie_se=1.0, val_images=500)
    assert s["_fastest"] == "b" and s["chosen_tie_points"] == pytest.approx(0.975, abs=1e-3)
    assert summarize(df, base, None, latency_budget=0.5)["_fastest"] == "a"


def test_confirmation_trains_tied_networks_spread_over_macs_and_keeps_the_best_on_val():
    df = pd.DataFrame({"arch": list("abcdef"), "score": [95.0, 94.5, 94.0, 93.8, 93.5, 80.0],
                       "macs": [5e6, 1e6, 9e6, 3e6, 7e6, 2e7], "latency_ms": 0.3,
                       "memory_bytes": 20, "feasible": True, "pareto": True})
    assert list(confirmation_set(df, 2.0, 3)["arch"]) == ["c", "a", "b"]  # pick's first
    assert list(confirmation_set(df, 2.0, 9)["arch"]) == ["c", "e", "a", "d", "b"]  # f: no tie
    assert list(confirmation_set(df, 0.0, 3)["arch"]) == ["a"]
    base = {"score": 90.0, "latency_ms": 1.0, "memory_bytes": 100}
    asked = []

    def trained(archs):
        asked.append(archs)
        val = {"c": 70.0, "a": 74.0, "b": 74.0}
        return {a: {"scratch_score": val[a], "scratch_scores": [val[a]]} for a in archs}

    s = summarize(df, base, None, 0.5, 2.0, 500, confirm=3, train_on_val=trained)
    assert asked == [["c", "a", "b"]] and s["_fastest"] == "a"  # a tie on val: the earlier
    assert s["confirmed_networks"] == 3
    assert [(c["arch"], c["val_score"]) for c in s["confirmations"]] == [
        ("c", 70.0), ("a", 74.0), ("b", 74.0)]
    assert s["chosen_score"] == 95.0
    # nothing to confirm: one confirmation asked for, one network tied, no latency budget
    for confirm, tie_se, budget in ((1, 2.0, 0.5), (3, 0.0, 0.5), (3, 2.0, None)):
        s = summarize(df, base, None, budget, tie_se, 500, confirm=confirm, train_on_val=trained)
        assert len(asked) == 1 and s["confirmations"] == []


@pytest.mark.parametrize("key, value", [("score", "magic"), ("candidates", 0),
                                        ("max_latency_ms", -1), ("latency_budget", "half"),
                                        ("score_tie", -1), ("score_tie", True),
                                        ("confirm", -1), ("confirm_seeds", 0),
                                        ("candidatez", 10)])
def test_search_params_are_checked(key, value):
    from hwnas.params import ParamsError, load_params, validate_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params["search"][key] = value
    with pytest.raises(ParamsError, match=f"search.{key}"):
        validate_params(params)


def test_multishot_fans_out_and_is_deterministic(prefect_harness):
    from flows.multishot import multishot

    rng = np.random.default_rng(1)
    archs = [SPACE.sample(rng).encode() for _ in range(2)]
    data = {"dataset": "digits", "resolution": 32, "val_fraction": 0.1, "test_fraction": 0.2}
    train = {"epochs": 1, "batch_size": 64}
    a = multishot(archs, data, train, seed=0, kind="threads")
    b = multishot(archs, data, train, seed=0, kind="threads")
    assert [r["arch"] for r in a] == archs
    assert [r["score"] for r in a] == [r["score"] for r in b]
    with pytest.raises(ValueError, match="unknown kind"):
        multishot(archs, data, train, kind="carrier-pigeon")


def test_supernet_runs_uncurated_networks_for_the_curation_experiment():
    from hwnas.space import uncurated_space
    from hwnas.supernet import SuperNet, extract_subnet

    torch.manual_seed(0)
    supernet = SuperNet(SPACE).eval()
    rng = np.random.default_rng(0)
    x = torch.randn(2, 1, 32, 32)
    for _ in range(5):
        arch = uncurated_space(CFG).sample(rng)
        net = extract_subnet(supernet, arch).eval()
        assert torch.allclose(net(x), supernet(x, arch), atol=1e-5)


def test_a_space_that_cannot_build_a_network_is_refused():
    from hwnas.search.objectives import SearchInputError
    from hwnas.search.run import check_space

    tiny = SpaceConfig(resolution=4, stem_stride=2, stages=((32, 1, 2), (64, 1, 2), (96, 1, 2)))
    with pytest.raises(SearchInputError, match="cannot build a valid network"):
        check_space(curated_space(SPEC, tiny))
    check_space(SPACE)
