"""kill -9 of the ``train_supernet`` and ``search`` stages at several points, then a rerun:
the work resumes (it does not start over), nothing is lost or done twice, the outputs
equal an uninterrupted run's where the code promises it, and no MLflow run is left
RUNNING. Each stage runs as a subprocess in a temporary workspace with tiny params."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from hwnas import layout
from hwnas.files import temporary

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, CANDIDATES, POPULATION = 3, 36, 6
CKPT = layout.SUPERNET_CHECKPOINT  # the stages run for the default task (classification)
JOURNAL = layout.SEARCH_JOURNAL
TINY_SPACE = {"head_features": 32, "stem_stride": 2, "kernels": [3, 5], "expands": [1, 2],
              "stages": [[32, 1, 2], [32, 1, 1]], "depth_multipliers": [1.0, 2.0],
              "width_range": [0.5, 1.0]}


def _tiny_params() -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    t = p["train_supernet"]
    t.update(threads=1, calib_batches=1, space=dict(TINY_SPACE))
    t["data"].update(dataset="digits", resolution=16)  # sklearn's digits: no download
    t["train"].update(epochs=EPOCHS, batch_size=128, num_random=1)
    p["search"].update(candidates=CANDIDATES, population=POPULATION, latency_budget=None,
                       calib_images=256, val_images=179, workers=1)
    return p


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A workspace: tiny params and a latency estimator that covers the tiny space."""
    from hardware.spec import load_spec
    from hwnas.estimator import LightGBMConfig
    from hwnas.estimator.microbench import MicrobenchConfig, run_microbench
    from hwnas.estimator.train import train

    ws = tmp_path_factory.mktemp("template")
    (ws / "params.yaml").write_text(yaml.safe_dump(_tiny_params()))
    spec = load_spec("neural-engine-32")
    cfg = MicrobenchConfig(samples=120, repeats=1, noise=0.0, seed=2, time_budget_s=60,
                           spaces=[{"resolution": 16, "in_channels": 1, "classes": 10,
                                    **TINY_SPACE}])
    train(run_microbench(cfg, spec), spec, "sim", LightGBMConfig(n_estimators=20),
          ws / "models/estimator" / spec.name, "test")
    return ws


def _workspace(template: Path, folder: Path) -> Path:
    ws = folder / "ws"
    shutil.copytree(template, ws)
    return ws


def _env(ws: Path, code: Path = ROOT) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlflow.db'}",
            "PYTHONPATH": str(code),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _start(ws: Path, stage: str) -> subprocess.Popen:
    with (ws / f"{stage}.log").open("w") as log:  # rewritten per run
        return subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=ws,
                                env=_env(ws), stdout=log, stderr=subprocess.STDOUT)


def _finish(ws: Path, stage: str, proc: subprocess.Popen) -> str:
    assert proc.wait(timeout=300) == 0, (ws / f"{stage}.log").read_text()[-3000:]
    return (ws / f"{stage}.log").read_text()


def _run(ws: Path, stage: str) -> str:
    return _finish(ws, stage, _start(ws, stage))


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the stage ended before the kill point"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


def _processes_in(folder: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == folder.resolve():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _runs(ws: Path, name: str) -> list:
    """The MLflow runs called ``name``, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    exp = client.get_experiment_by_name("hwnas").experiment_id
    return sorted(client.search_runs([exp], f"attributes.run_name = '{name}'"),
                  key=lambda r: r.info.start_time)


def _statuses(ws: Path) -> list[str]:
    with sqlite3.connect(ws / "mlflow.db") as db:
        return [s for (s,) in db.execute("SELECT status FROM runs")]


def _metric_history(ws: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


class Reference:
    """Uninterrupted runs of both stages, beside the killed ones (2 cores: one each)."""

    def __init__(self, ws: Path):
        self.ws, self.procs = ws, {"train_supernet": _start(ws, "train_supernet")}

    def done(self, stage: str) -> Path:
        if stage == "search":
            self.start_search()
        _finish(self.ws, stage, self.procs[stage])
        return self.ws

    def start_search(self) -> None:
        if "search" not in self.procs:
            self.done("train_supernet")
            self.procs["search"] = _start(self.ws, "search")


@pytest.fixture(scope="module")
def reference(template, tmp_path_factory):
    ref = Reference(_workspace(template, tmp_path_factory.mktemp("reference")))
    yield ref
    for proc in ref.procs.values():
        proc.kill()
        proc.wait()


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = (torch.load(p, weights_only=True) for p in (a, b))
    assert sa["space"] == sb["space"] and sa.keys() == sb.keys()
    assert sa["state_dict"].keys() == sb["state_dict"].keys()
    for k, v in sa["state_dict"].items():
        assert torch.equal(v, sb["state_dict"][k]), k


def test_train_supernet_killed_in_an_epoch_and_after_a_checkpoint(template, reference,
                                                                   tmp_path):
    """(a) kill in the first epoch: nothing to resume, the rerun starts over; (b) kill right
    after a checkpoint: the rerun resumes after that epoch; a torn ``.tmp`` (a kill while
    the checkpoint is written) is ignored. The weights equal an uninterrupted run's
    (training on CPU is deterministic: ``test_supernet`` checks it in process)."""
    ws = _workspace(template, tmp_path)
    ckpt, marker = ws / CKPT, ws / CKPT.with_name("mlflow_run")

    proc = _start(ws, "train_supernet")  # (a): the run has started, no epoch is done
    _kill_when(proc, marker.exists)
    assert not ckpt.exists()
    assert [r.info.status for r in _runs(ws, "train_supernet")] == ["RUNNING"]

    proc = _start(ws, "train_supernet")  # (b)
    _kill_when(proc, ckpt.exists)
    assert "resuming" not in (ws / "train_supernet.log").read_text()  # (a) left nothing
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= epoch < EPOCHS
    assert [r.info.status for r in _runs(ws, "train_supernet")] == ["KILLED", "RUNNING"]
    # what a kill inside ``torch.save`` leaves: a torn temporary beside a whole checkpoint
    temporary(ckpt).write_bytes(ckpt.read_bytes()[:4096])

    out = _run(ws, "train_supernet")
    assert f"resuming after epoch {epoch}/{EPOCHS}" in out
    ref_ws = reference.done("train_supernet")
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.pt", "mlflow_run"]
    _assert_same_weights(ws / layout.SUPERNET, ref_ws / layout.SUPERNET)
    got, want = (json.loads((w / layout.TRAIN_SUPERNET / "metrics.json").read_text())
                 for w in (ws, ref_ws))
    timing = ("train_seconds", "epoch_seconds_mean")
    assert {k: v for k, v in got.items() if k not in timing} == \
        {k: v for k, v in want.items() if k not in timing}

    runs = _runs(ws, "train_supernet")
    assert [r.info.status for r in runs] == ["KILLED", "KILLED", "FINISHED"]
    assert "RUNNING" not in _statuses(ws)
    # the finished run holds every epoch once (those before the kill from the checkpoint),
    # the same values as the uninterrupted run
    [ref_run] = _runs(ref_ws, "train_supernet")
    for key in ("loss_largest", "val_score_largest", "val_score_smallest", "lr"):
        history = _metric_history(ws, runs[-1].info.run_id, key)
        assert [s for s, _ in history] == list(range(1, EPOCHS + 1)), key
        assert history == _metric_history(ref_ws, ref_run.info.run_id, key), key


def _journal_lines(ws: Path) -> int:
    return sum(f.read_bytes().count(b"\n") for f in (ws / JOURNAL).glob("*.jsonl"))


def _candidate_runs(ws: Path) -> int:
    try:
        with sqlite3.connect(f"file:{ws / 'mlflow.db'}?mode=ro", uri=True, timeout=0.1) as db:
            return db.execute("SELECT count(*) FROM runs WHERE name LIKE 'candidate-%'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or locked by the stage
        return 0


def test_search_killed_mid_search_and_while_logging_resumes_from_its_journal(
        template, reference, tmp_path):
    """(c) kill after some batches are journaled: the rerun takes them from the journal
    (a torn last line, as a kill inside the append leaves, is dropped) and evaluates
    only the rest; (d) kill while the candidates are logged to MLflow (every candidate is
    journaled by then): the rerun evaluates none. Each trial is in the table once, the
    journaled ones as an uninterrupted search has them, the scoring workers die with the
    search, and no run or candidate run is left RUNNING."""
    ws = _workspace(template, tmp_path)
    reference.start_search()
    (ws / layout.SUPERNET).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(reference.ws / layout.SUPERNET, ws / layout.SUPERNET)

    proc = _start(ws, "search")  # (c)
    _kill_when(proc, lambda: _journal_lines(ws) >= POPULATION)
    [journal] = (ws / JOURNAL).glob("*.jsonl")
    kept = journal.read_bytes()
    done = kept.count(b"\n")
    assert POPULATION <= done < CANDIDATES and kept.endswith(b"\n")
    deadline = time.monotonic() + 10
    while _processes_in(ws) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_in(ws) == [], "scoring workers outlived the killed search"
    journal.write_bytes(kept + kept[:100])  # a torn last line

    proc = _start(ws, "search")  # (d)
    _kill_when(proc, lambda: _candidate_runs(ws) > 0)
    [killed_c, killed_d] = _runs(ws, "search")
    assert killed_c.info.status == "KILLED" and killed_d.info.status == "RUNNING"
    assert killed_d.data.metrics["resumed_candidates"] == done
    assert _journal_lines(ws) == CANDIDATES and journal.read_bytes().startswith(kept)

    out = _run(ws, "search")
    assert f"search: {CANDIDATES} candidates ({CANDIDATES} from the journal," in out
    assert json.loads((ws / layout.SEARCH / "metrics.json").read_text())[
        "resumed_candidates"] == CANDIDATES
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [r["trial"] for r in rows] == list(range(CANDIDATES))
    table = pd.read_parquet(ws / layout.CANDIDATES)
    assert list(table["trial"]) == list(range(CANDIDATES))  # each trial once, none lost
    ref_ws = reference.done("search")
    [ref_journal] = (ref_ws / JOURNAL).glob("*.jsonl")
    assert ref_journal.name == journal.name and ref_journal.read_bytes().startswith(kept)
    ref = pd.read_parquet(ref_ws / layout.CANDIDATES)
    # a resumed NSGA-II continues from the journal reseeded by progress (evolution.search):
    # only the journaled trials are promised to equal the uninterrupted search's
    cols = [c for c in table.columns if c != "pareto"]
    pd.testing.assert_frame_equal(table[cols].head(done), ref[cols].head(done))
    assert [r.info.status for r in _runs(ws, "search")] == ["KILLED", "KILLED", "FINISHED"]
    assert "RUNNING" not in _statuses(ws)


def test_search_confirms_the_latency_models_ties_by_training_and_keeps_the_runs(
        template, reference, tmp_path):
    """``search.confirm``: tied candidates under the latency budget are trained from scratch
    and scored on the val split; the best is the latency model, and the rerun of a finished
    search trains nothing again (the runs are in ``confirm.jsonl``)."""
    ws = _workspace(template, tmp_path)
    reference.start_search()
    (ws / layout.SUPERNET).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(reference.ws / layout.SUPERNET, ws / layout.SUPERNET)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["search"].update(latency_budget=1.0, score_tie=50.0, confirm=3)
    (ws / "params.yaml").write_text(yaml.safe_dump(params))

    out = _run(ws, "search")
    summary = json.loads((ws / layout.SEARCH / "metrics.json").read_text())
    tried = summary["confirmations"]
    assert summary["confirmed_networks"] == len(tried) >= 2  # at most 3: those tied
    assert f"confirming {len(tried)} tied candidates from scratch on the val split" in out
    best = max(tried, key=lambda c: c["val_score"])
    chosen = json.loads((ws / layout.PARETO).read_text())["chosen"]["latency"]
    assert chosen == best["arch"] and summary["chosen_score"] == best["score"]
    runs = [json.loads(line) for line in (ws / layout.CONFIRMATIONS).read_text().splitlines()]
    assert sorted(r["arch"] for r in runs) == sorted(c["arch"] for c in tried)
    assert {round(r["scratch_score"], 3) for r in runs} == {c["val_score"] for c in tried}
    kept = (ws / layout.CONFIRMATIONS).read_bytes()

    again = _run(ws, "search")
    assert "confirmed" in again and (ws / layout.CONFIRMATIONS).read_bytes() == kept
    assert json.loads((ws / layout.SEARCH / "metrics.json").read_text())["confirmations"] == tried


@pytest.mark.slow
def test_dvc_repro_killed_after_a_checkpoint_resumes_and_ends_up_to_date(template, reference,
                                                                        tmp_path):
    """``dvc repro train_supernet`` killed (its process group: dvc and the stage) right
    after a checkpoint, then rerun: it resumes, and ``dvc status`` is clean."""
    ws = _workspace(template, tmp_path)
    for folder in ("hardware", "hwnas", "stages"):  # the stage's deps, hashed by dvc
        shutil.copytree(ROOT / folder, ws / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    # train_supernet@<task> depends on the task's data@<task> (foreach: ${tasks})
    (ws / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {name: stages[name] for name in ("data", "train_supernet")}}))
    env = _env(ws, code=ws)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=ws, env=env, check=True)

    proc = subprocess.Popen([*dvc, "repro", "train_supernet"], cwd=ws, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while not (ws / CKPT).exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint came"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    epoch = torch.load(ws / CKPT, weights_only=True)["epoch"]
    lock = (ws / "dvc.lock").read_text() if (ws / "dvc.lock").exists() else ""
    assert epoch < EPOCHS and f"train_supernet@{layout.current_task()}" not in lock
    ref_ws = reference.done("train_supernet")

    again = subprocess.run([*dvc, "repro", "train_supernet"], cwd=ws, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming after epoch {epoch}/{EPOCHS}" in again.stdout
    status = subprocess.run([*dvc, "status", "train_supernet"], cwd=ws, env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    _assert_same_weights(ws / layout.SUPERNET, ref_ws / layout.SUPERNET)
    assert "RUNNING" not in _statuses(ws)
