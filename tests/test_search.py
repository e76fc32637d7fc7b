"""The search engine: genome round trips, NSGA-II with constraints, resume, determinism."""
import json

import numpy as np
import pytest

from hardware.spec import load_spec
from hwnas.arch import encode
from hwnas.simulation import simulate_arch
from hwnas.search.evolution import Constraints, non_dominated, pareto_mask, search
from hwnas.search.genome import from_arch, genes, random_genome, to_arch
from hwnas.space import SpaceConfig, curated_space, uncurated_space

SPEC = load_spec()
CFG = SpaceConfig(head_features=0, stages=((32, 1, 1), (64, 2, 2), (96, 2, 2), (128, 1, 2)))
SPACE = curated_space(SPEC, CFG)


def evaluate(archs):
    """Latency and memory from the simulator; a size-based stand-in for score
    (the engine is under test here, not the score model)."""
    out = []
    for a in archs:
        r = simulate_arch(a, SPEC, per_kernel=False)
        out.append({"score": float(np.log(r["macs"])), "latency_ms": r["latency_ms"],
                    "memory_bytes": r["memory_bytes"]})
    return out


@pytest.mark.parametrize("space", [SPACE, uncurated_space(CFG)], ids=["curated", "uncurated"])
def test_genome_round_trip(space):
    rng = np.random.default_rng(0)
    table = genes(space)
    for _ in range(50):
        genome = random_genome(space, rng)
        assert all(genome[k] in table[k] for k in table)
        arch = to_arch(space, genome)
        assert to_arch(space, from_arch(space, arch)) == arch


def test_from_arch_rejects_what_the_space_cannot_express():
    arch = to_arch(SPACE, random_genome(SPACE, np.random.default_rng(0)))
    odd = arch.__class__(stem=arch.stem.__class__(40, 3, 1), blocks=arch.blocks,
                         head=arch.head, input=arch.input)
    with pytest.raises(ValueError, match="gene stem"):
        from_arch(SPACE, odd)


def test_search_respects_constraints_and_is_seeded():
    limit = 0.12
    a = search(SPACE, evaluate, candidates=150, population=30, seed=3,
               constraints=Constraints(max_latency_ms=limit))
    b = search(SPACE, evaluate, candidates=150, population=30, seed=3,
               constraints=Constraints(max_latency_ms=limit))
    assert len(a) == 150 and list(a["arch"]) == list(b["arch"])
    front = a[a["pareto"]]
    assert len(front) > 0 and (front["latency_ms"] <= limit).all()
    assert a["feasible"].equals(a["latency_ms"] <= limit)
    # evolution moves toward feasible candidates
    assert a["feasible"][-30:].mean() > a["feasible"][:30].mean()


def test_search_starts_from_seeds():
    seed_arch = to_arch(SPACE, random_genome(SPACE, np.random.default_rng(5)))
    df = search(SPACE, evaluate, candidates=10, population=10, seed=0, seeds=[seed_arch])
    assert df["arch"].iloc[0] == encode(seed_arch)


def test_killed_search_resumes_without_losing_or_repeating(tmp_path):
    journal = tmp_path / "study.journal"
    calls = []

    def dying(archs):
        calls.append(len(archs))
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed in the middle of the third batch
        return evaluate(archs)

    with pytest.raises(KeyboardInterrupt):
        search(SPACE, dying, candidates=100, population=20, seed=1, journal=journal)
    with journal.open("a") as f:
        f.write('{"arch": "torn by the ki')  # a write cut short by the kill
    resumed = search(SPACE, evaluate, candidates=100, population=20, seed=1, journal=journal)
    assert len(resumed) == 100 and resumed["trial"].is_unique
    fresh = search(SPACE, evaluate, candidates=100, population=20, seed=1)
    # the 40 finished before the kill are kept as they were
    assert list(resumed["arch"][:40]) == list(fresh["arch"][:40])
    # and the evolution goes on from their generation instead of starting over
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    generation = [r["sampler"]["NSGAIISampler:generation"] for r in rows]
    assert generation[:40] == sorted(generation[:40]) and min(generation[40:]) >= 2


def test_non_dominated_minimizes_every_column():
    # (latency, -score): (3, -55) loses to (2, -60); equal rows do not beat each other
    pts = [[1, -50], [2, -60], [3, -55], [2.5, -70], [1, -50]]
    assert list(non_dominated(pts)) == [True, True, False, True, True]


def test_pareto_mask():
    import pandas as pd
    df = pd.DataFrame({"arch": list("abcde"), "score": [0.9, 0.8, 0.9, 0.95, 0.99],
                       "latency_ms": [1.0, 0.5, 2.0, 1.0, 0.1], "memory_bytes": [1, 1, 1, 1, 1],
                       "feasible": [True, True, True, True, False]})
    assert list(pareto_mask(df)) == [False, True, False, True, False]


def test_a_batch_of_architectures_seen_before_is_not_scored_again():
    """A space of one network: after the first batch every candidate is a repeat, and the
    objective (the estimator: it cannot take no networks) is not called again."""
    one = curated_space(SPEC, SpaceConfig(head_features=0, stages=((32, 1, 1), (32, 1, 2)),
                                          kernels=(3,), expands=(1,), types=("ibn",),
                                          depth_multipliers=(1.0,), width_range=(1.0, 1.0)))
    calls = []

    def objective(archs):
        assert archs, "scored no networks"
        calls.append(len(archs))
        return [{"score": 1.0, "latency_ms": 1.0, "memory_bytes": 1} for _ in archs]

    df = search(one, objective, candidates=8, population=4, seed=0)
    assert calls == [1] and list(df["trial"]) == list(range(8))
