"""Multi-objective evolution over a search space with Optuna's NSGA-II.

Objectives: maximize score, minimize latency and memory; hard constraints on
latency and memory go through NSGA-II's ``constraints_func`` (a candidate that
breaks one is dominated by every feasible one). Optuna supplies the algorithm,
crossover, mutation, seeding and a persistent study (sqlite) for resume. What we
add by hand: the fixed-length genome (genome.py), batched evaluation (a whole
population is asked at once so the estimator and supernet see batches), a cache
so a repeated architecture is not evaluated twice, and a JSON-lines journal of
finished candidates from which a killed search resumes.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from hwnas.arch import ArchSpec, encode
from hwnas.files import append_journal, read_journal
from hwnas.search.genome import genes, to_arch
from hwnas.space import SearchSpace

# the objectives of a batch: one dict per arch with at least score, latency_ms, memory_bytes
ObjectiveFn = Callable[[Sequence[ArchSpec]], list[dict]]
OBJECTIVES = ("score", "latency_ms", "memory_bytes")


@dataclass(frozen=True)
class Constraints:
    max_latency_ms: float | None = None
    max_memory_bytes: float | None = None

    def violations(self, latency_ms: float, memory_bytes: float) -> dict[str, float]:
        """Optuna's convention: each value <= 0 means satisfied."""
        return {"latency": latency_ms - self.max_latency_ms if self.max_latency_ms else 0.0,
                "memory": memory_bytes - self.max_memory_bytes if self.max_memory_bytes else 0.0}


def open_study(seed: int, population: int) -> optuna.Study:
    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    return optuna.create_study(sampler=sampler, directions=["maximize", "minimize", "minimize"])


def search(space: SearchSpace, objective_fn: ObjectiveFn, *, candidates: int,
           population: int = 50, seed: int = 0, constraints: Constraints = Constraints(),
           journal: str | Path | None = None, seeds: Sequence[ArchSpec] = (),
           on_batch: Callable[[int, list[dict]], None] | None = None) -> pd.DataFrame:
    """Evaluate ``candidates`` architectures by NSGA-II and return them all as a
    table (one row per candidate, in evaluation order, with ``feasible`` and
    ``pareto``).

    With a ``journal`` (a JSON-lines file) every finished batch is appended to it
    and a rerun resumes from it: finished candidates are neither lost nor evaluated
    again. (Optuna's own sqlite and journal storages cost 0.1-0.3 s per trial at
    1,000 trials here, more than the evaluation; an in-memory study rebuilt from
    our journal costs milliseconds.)
    """
    from hwnas.search.genome import from_arch

    dists = {k: optuna.distributions.CategoricalDistribution(v) for k, v in genes(space).items()}
    path = Path(journal) if journal is not None else None
    done = read_journal(path) if path else []
    # reseed by progress: a fresh run is exactly reproducible, a resumed one continues
    study = open_study(seed + len(done), population)
    # the sampler's own attributes (NSGA-II's generation and parents) come back too,
    # so the evolution continues from where it stopped
    study.add_trials([optuna.trial.create_trial(
        params=r["params"], distributions=dists, values=[r[o] for o in OBJECTIVES],
        user_attrs={"arch": r["arch"]}, system_attrs=r.get("sampler", {}),
        constraints=constraints.violations(r["latency_ms"], r["memory_bytes"])) for r in done])
    if not done:
        for arch in seeds:  # e.g. the baseline, so the front starts from it
            study.enqueue_trial(from_arch(space, arch))
    cache: dict[str, dict] = {r["arch"]: r for r in done}
    while len(done) < candidates:
        trials = [study.ask(dists) for _ in range(min(population, candidates - len(done)))]
        archs = [to_arch(space, t.params) for t in trials]
        keys = [encode(a) for a in archs]
        fresh = {k: a for k, a in zip(keys, archs) if k not in cache}
        # a batch of architectures seen before needs no evaluation (nor an empty call)
        for k, result in zip(fresh, objective_fn(list(fresh.values())) if fresh else []):
            cache[k] = {**result, "arch": k}
        batch = []
        for trial, k in zip(trials, keys):
            r = {**cache[k], "trial": len(done) + len(batch), "params": trial.params}
            for key, value in constraints.violations(r["latency_ms"], r["memory_bytes"]).items():
                trial.set_constraint(key, value)
            trial.set_user_attr("arch", k)
            study.tell(trial, [float(r[o]) for o in OBJECTIVES])
            batch.append(r)
        frozen = study.get_trials(deepcopy=False)
        for r in batch:
            r["sampler"] = {k: v for k, v in frozen[r["trial"]].system_attrs.items()
                            if not k.startswith("constraints")}
        if path:
            append_journal(path, batch)
        done += batch
        if on_batch:
            on_batch(len(done), batch)
    return candidates_table(done, constraints)


def candidates_table(rows: list[dict], constraints: Constraints) -> pd.DataFrame:
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("params", "sampler")}
                       for r in rows])
    df["feasible"] = [all(v <= 0 for v in constraints.violations(lat, mem).values())
                      for lat, mem in zip(df["latency_ms"], df["memory_bytes"])]
    df["pareto"] = pareto_mask(df)
    return df


def pareto_mask(df: pd.DataFrame) -> np.ndarray:
    """Feasible candidates no other feasible candidate beats on every objective
    (duplicates of one architecture count once)."""
    mask = np.zeros(len(df), dtype=bool)
    feasible = df[df["feasible"]].drop_duplicates("arch")
    mask[feasible.index] = non_dominated(np.column_stack(
        [-feasible["score"], feasible["latency_ms"], feasible["memory_bytes"]]))
    return mask


def non_dominated(points) -> np.ndarray:
    """Rows that no other row beats: <= in every column (all minimized), < in one."""
    pts = np.asarray(points, dtype=float)
    return np.array([not np.any(np.all(pts <= p, axis=1) & np.any(pts < p, axis=1))
                     for p in pts], dtype=bool)
