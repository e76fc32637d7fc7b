"""A tiny search, run again: its candidates are logged to MLflow once, the chosen tagged."""
import hashlib
from types import SimpleNamespace

import pytest

from hardware.spec import load_spec
from hwnas.search.objectives import make_objective_fn
from hwnas.simulation import simulate_arch
from hwnas.space import SpaceConfig, curated_space

SPEC = load_spec()
SPACE = curated_space(SPEC, SpaceConfig(head_features=64, stem_stride=2,
                                        stages=((32, 1, 2), (64, 2, 2), (96, 2, 1)),
                                        expands=(1, 2, 4), depth_multipliers=(0.5, 1.0, 1.5),
                                        width_range=(0.5, 1.0)))
BASELINE = SPACE.baseline([32, 64, 96])
PARAMS = {"score": "naswot", "candidates": 24, "population": 8, "seed": 0,
          "max_latency_ms": None, "latency_budget": 0.8, "score_tie": 0.0,
          "memory_budget": None, "val_images": 100, "confirm": 0, "confirm_seeds": 1,
          "family": []}


def estimate(archs):
    return [{**simulate_arch(a, SPEC, per_kernel=False), "out_of_range": []} for a in archs]


def score(archs):
    """Deterministic scores in [90, 99); the baseline scores the least."""
    return [90.0 if a.encode() == BASELINE.encode() else
            90.0 + int(hashlib.sha256(a.encode().encode()).hexdigest()[:4], 16) % 900 / 100
            for a in archs]


@pytest.fixture()
def workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the journal goes to results/search/journal/ here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("HWNAS_MLFLOW_PARENT_RUN_ID", raising=False)
    return tmp_path


def _search(objective=None):
    from hwnas.search.run import SearchContext, run_search

    ctx = SearchContext(dict(PARAMS), SPEC, __import__("pathlib").Path("no-estimator"),
                        SimpleNamespace(estimate=estimate), SPACE, BASELINE, [], ([], []))
    return run_search(ctx, objective or make_objective_fn(score, estimate))


def _runs():
    from mlflow.tracking import MlflowClient

    from hwnas.tracking import tracking_uri

    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name("hwnas").experiment_id
    return client.search_runs([exp], max_results=1000)


def test_a_rerun_logs_no_candidate_again_and_tags_the_chosen(workspace):
    calls = []

    def killed_after_two_batches(archs):  # a search killed mid-way: journal, no MLflow runs
        calls.append(len(archs))
        if len(calls) > 2:
            raise KeyboardInterrupt
        return make_objective_fn(score, estimate)(archs)

    with pytest.raises(KeyboardInterrupt):
        _search(killed_after_two_batches)
    assert not [r for r in _runs() if "trial" in r.data.tags]

    first = _search()  # resumes from the journal, logs every candidate once
    assert 0 < first.summary["resumed_candidates"] < PARAMS["candidates"]
    assert first.logged_runs == PARAMS["candidates"]
    second = _search()  # the same search again: everything from the journal, nothing new
    assert second.summary["resumed_candidates"] == PARAMS["candidates"]
    assert second.logged_runs == 0

    runs = _runs()
    searches = [r for r in runs if r.info.run_name == "search"]
    candidates = [r for r in runs if "trial" in r.data.tags]
    assert len(candidates) == PARAMS["candidates"]
    assert sorted(int(r.data.tags["trial"]) for r in candidates) == list(range(PARAMS["candidates"]))
    fp = {r.data.tags["search_fingerprint"] for r in searches + candidates}
    assert len(fp) == 1 and all(r.data.tags["git_commit"] for r in candidates)
    assert {r.data.tags["mlflow.parentRunId"] for r in candidates} <= {r.info.run_id for r in searches}
    # the finished search runs carry their summary's numeric figures
    assert sorted(r.info.status for r in searches) == ["FAILED", "FINISHED", "FINISHED"]
    for s in (r for r in searches if r.info.status == "FINISHED"):
        assert s.data.metrics["candidates"] == PARAMS["candidates"]
        assert "chosen_latency_reduction" in s.data.metrics
        assert s.data.metrics["candidate_runs_logged"] in (0, PARAMS["candidates"])

    from hwnas.search.run import plot

    plot(second, workspace / "pareto.png")  # budgets, the chosen networks, a caption
    assert (workspace / "pareto.png").stat().st_size > 10000

    chosen = {r.data.tags["chosen"]: r for r in candidates if "chosen" in r.data.tags}
    expect = {n: a for n, a in second.pareto["chosen"].items() if a}
    assert expect and set(",".join(chosen).split(",")) == set(expect)
    for names, run in chosen.items():
        for name in names.split(","):
            assert run.data.params["arch"] == expect[name]
            assert second.pareto["chosen_scores"][name]["arch"] == expect[name]
