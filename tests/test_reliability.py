"""Hostile input to the real ``hwnas`` command: each case exits 2 with one line on stderr,
no traceback, nothing on stdout and nothing written in the working folder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HWNAS = str(Path(sys.executable).parent / "hwnas")
ROOT = Path(__file__).resolve().parents[1]
TINY = "i1x32x32-stem_k3_c32_s1-conv_k3_c32_s1-cls_f0_n10"


def _deep_json(depth: int = 20_000) -> str:
    return '{"a":' * depth + "1" + "}" * depth


CASES = {  # name: (argv, stdin bytes, files to create, words the message must hold)
    "binary file as --arch": (["simulate", "--arch", "bin.json"], b"", {"bin.json": bytes(range(256)) * 8},
                              ["bin.json", "cannot read as text"]),
    "empty stdin": (["simulate", "--arch", "-"], b"", {}, ["stdin", "no architecture"]),
    "blank stdin lines": (["simulate", "--arch", "-"], b"\n\n  \n", {}, ["stdin", "no architecture"]),
    "binary stdin": (["simulate", "--arch", "-"], b"\xff\xfe\x00garbage\n", {}, ["stdin line 1"]),
    "JSON nested 20,000 deep": (["simulate", "--arch", _deep_json()], b"", {}, ["nested too deeply"]),
    "JSON file nested 20,000 deep": (["simulate", "--arch", "deep.json"], b"",
                                     {"deep.json": _deep_json().encode()}, ["deep.json", "nested too deeply"]),
    "10 MB bad stdin line": (["simulate", "--arch", "-"], b"x" * 10_000_000 + b"\n", {}, ["stdin line 1"]),
    "noise nan": (["simulate", "--noise", "nan", "--arch", TINY], b"", {}, ["--noise"]),
    "noise inf": (["simulate", "--noise", "inf", "--arch", TINY], b"", {}, ["--noise"]),
    "noise negative": (["simulate", "--noise", "-0.1", "--arch", TINY], b"", {}, ["--noise"]),
    "unknown spec": (["simulate", "--hardware", "warp-drive", "--arch", TINY], b"", {}, ["warp-drive"]),
    "malformed --op": (["simulate", "--op", "{bad"], b"", {}, ["--op"]),
    "estimate without an estimator": (["estimate", "--arch", TINY], b"", {}, ["estimator"]),
    "estimate on empty stdin": (["estimate", "--arch", "-"], b"", {}, ["estimator"]),
    "lineage without a store": (["lineage", "0123abcd"], b"", {}, ["mlflow.db", "no MLflow store"]),
    "schedule without a Prefect server": (["schedule", "--cron", "0 3 * * *"], b"", {},
                                          ["Prefect server", "PREFECT_API_URL"]),
    "run an unknown stage": (["run", "--stage", "nosuch"], b"", {"params.yaml": None, "dvc.yaml": None},
                             ["unknown stage 'nosuch'"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_one_line_exit_2(name, tmp_path):
    argv, stdin, files, words = CASES[name]
    for fname, content in files.items():
        (tmp_path / fname).write_bytes(content if content is not None
                                       else (ROOT / fname).read_bytes())
    before = sorted(p.name for p in tmp_path.iterdir())
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run([HWNAS, *argv], input=stdin, cwd=tmp_path, capture_output=True,
                          timeout=120, env=env)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert len(lines[0]) < 600 and "Traceback" not in err
    assert all(w in lines[0] for w in words), lines[0]
    assert proc.stdout == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def _processes_in(folder: Path) -> list[int]:
    """Processes whose working directory is ``folder``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == folder:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_a_killed_pipeline_leaves_no_process_no_lock_and_no_running_run(tmp_path):
    """kill -9 of ``hwnas run`` mid-stage: dvc, the stage and the temporary Prefect server
    die with it; the next run gets the workspace and marks the dead runs KILLED."""
    import signal
    import time

    import yaml

    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "slow": {"cmd": "python -c \"import time; open('started', 'w'); time.sleep(300)\""},
        "quick": {"cmd": "python -c \"open('done', 'w')\""}}}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path,
                   check=True, env=env)
    run = subprocess.Popen([HWNAS, "run", "--stage", "slow"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists():
        assert run.poll() is None and time.monotonic() < deadline, "the stage never started"
        time.sleep(0.5)
    assert len(_processes_in(tmp_path)) >= 3  # hwnas, the Prefect server, dvc, the stage
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 15
    while _processes_in(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_in(tmp_path) == [], "orphans outlived the pipeline"

    second = subprocess.run([HWNAS, "run", "--stage", "quick"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    assert (tmp_path / "done").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("hwnas").experiment_id])
    status = {(r.info.run_name, r.data.tags.get("stages", r.data.tags.get("stage"))): r.info.status
              for r in runs}
    assert status[("pipeline", "slow")] == "KILLED" and status[("stage:slow", "slow")] == "KILLED"
    assert status[("pipeline", "quick")] == "FINISHED"
    assert "RUNNING" not in status.values()


@pytest.mark.parametrize("args, words", [
    (["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"], ["--timezone", "Mars/Olympus"]),
    (["--cron", "every night"], ["--cron", "'every night'"]),
])
def test_schedule_refuses_a_bad_cron_or_timezone(args, words, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # never contacted
    proc = subprocess.run([HWNAS, "schedule", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and all(w in lines[0] for w in words), lines
