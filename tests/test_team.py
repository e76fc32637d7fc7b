"""The team setup of the README ("From one machine to a team") on real servers on 127.0.0.1,
each started here and stopped after: an ``mlflow server`` the pipeline tracks to and ``hwnas lineage``
reads back, a ``prefect server`` where ``hwnas schedule`` serves a cron deployment that a run
triggered from the server executes, a DVC remote a teammate's clone pulls the outputs from
without recomputing them, and a tracking server gone mid-run: one line naming it, the
outputs kept.

A remote that cannot be written: nothing in hwnas touches a DVC remote (``hwnas run`` only
says "dvc push, with a remote"), so that is DVC's own message, checked in passing below:
``ERROR: unexpected error - [Errno 20] Not a directory: '<remote>/files/md5/..'``, exit 255,
no traceback, nothing local lost. (A ``chmod 0o500`` folder is no test: tests run as root.)

The tiny projects are modelled on ``test_pipeline``'s, in git: ``first`` writes a.txt,
``second`` copies it to b.txt under a run of its own, ``slow`` writes c.txt, then waits."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from flows.reaper import stop

pytestmark = [pytest.mark.slow, pytest.mark.servers]  # make test-servers

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
         "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1", "NO_PROXY": "127.0.0.1,localhost"}
# the project's defaults are what is tested (hwnas.tracking.HTTP_DEFAULTS), and no traceback
UNSET = ("HWNAS_TRACEBACK", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
         "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_TRACKING_URI", "PREFECT_API_URL")
STARTUP_S = 180  # a server's start on a busy 2-core machine (about 20 s idle)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return {**env, **QUIET, "PYTHONPATH": str(ROOT),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def _spawn(cmd: list[str], log: Path, env: dict, cwd: Path) -> subprocess.Popen:
    """A process leading its own group (its children die with it in ``_stop``)."""
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = STARTUP_S) -> None:
    """Until GET ``url`` answers 200; fails with the log if the server exits or never does."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"{url}: the server exited:\n{_tail(log)}"
        try:
            with opener.open(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url}: no answer in {timeout_s} s:\n{_tail(log)}"
        time.sleep(0.2)


@contextmanager
def mlflow_server(folder: Path):
    """``mlflow server`` on a free port: runs in sqlite in ``folder``, artifacts proxied to
    ``folder/artifacts``, one worker, no job runner. Yields (uri, process)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "server.log"
    proc = _spawn([str(BIN / "mlflow"), "server",
                   "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                   "--artifacts-destination", str(folder / "artifacts"),
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                  log, _base_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), folder)
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_http(f"{uri}/health", proc, log)
        yield uri, proc
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def mlflow_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow-server")


@pytest.fixture(scope="module")
def mlflow_uri(mlflow_home):
    with mlflow_server(mlflow_home) as (uri, _):
        yield uri


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """``prefect server start`` on a free port (API only: the tests need no UI, and no
    services: the cron schedule is read back, not waited for). Yields its API URL."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    log = home / "server.log"
    proc = _spawn([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                   "--port", str(port), "--no-ui", "--no-services"],
                  log, _base_env(PREFECT_HOME=str(home)), home)
    try:
        url = f"http://127.0.0.1:{port}/api"
        _wait_http(f"{url}/health", proc, log)
        yield url
    finally:
        stop(proc)


def make_project(path: Path, slow: bool = False) -> Path:
    """A git + DVC project with test_pipeline's two stages (and ``slow`` if asked), committed."""
    path.mkdir()
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "team@example.com"],
                ["git", "config", "user.name", "team"],
                [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=path, check=True, env=_base_env())
    (path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (path / "second.py").write_text(textwrap.dedent("""
        import json
        from pathlib import Path
        from hwnas import tracking
        with tracking.run("second-own", tags={"stage": "second"}):
            open("b.txt", "w").write(open("a.txt").read())
            json.dump({"score": 1.5}, open("metrics.json", "w"))
            tracking.log_artifacts(Path("."), ["b.txt"])  # through the server's proxy
    """))
    (path / "slow.py").write_text(textwrap.dedent("""
        import time
        from pathlib import Path
        from hwnas import tracking
        from hwnas.params import run_stage

        def main():
            with tracking.run("slow-own", tags={"stage": "slow"}):
                Path("c.txt").write_text("c")
                Path("slow.started").touch()
                deadline = time.monotonic() + 300
                while not Path("slow.go").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
                tracking.log_metrics({"after": 1.0})  # the server is gone by now

        run_stage("slow", main)
    """))
    stages = """
        stages:
          first:
            cmd: python -c "open('a.txt','w').write('a')"
            outs: [a.txt]
          second:
            cmd: python second.py
            deps: [a.txt, second.py]
            outs:
            - b.txt: {persist: true}
            - metrics.json: {persist: true, cache: false}
    """
    if slow:
        stages += """
          slow:
            cmd: python slow.py
            deps: [b.txt, slow.py]
            outs:
            - c.txt: {persist: true}
        """
    (path / "dvc.yaml").write_text(textwrap.dedent(stages))
    (path / ".gitignore").write_text(".hwnas-pipeline.lock\nslow.started\nslow.go\n*.log\n")
    _git(path, "add", "-A")
    _git(path, "commit", "-qm", "project")
    return path


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, env=_base_env(), timeout=60)


def _dvc(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, env=env or _base_env(),
                          capture_output=True, text=True, timeout=300)


def _hwnas(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hwnas.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _team_env(mlflow: str, prefect: str, home: Path, **extra: str) -> dict[str, str]:
    home.mkdir(exist_ok=True)
    return _base_env(MLFLOW_TRACKING_URI=mlflow, PREFECT_API_URL=prefect,
                     PREFECT_HOME=str(home), **extra)


def _runs(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hwnas")
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def _by_name(runs: list, name: str) -> list:
    return [r for r in runs if r.info.run_name == name]


@pytest.fixture(scope="module")
def team_run(tmp_path_factory, mlflow_uri, prefect_api):
    """`hwnas run --stage first --stage second` in a git project, tracked on the MLflow
    server, orchestrated by the Prefect server. Yields (project, pipeline run id, env)."""
    base = tmp_path_factory.mktemp("team")
    project = make_project(base / "project")
    env = _team_env(mlflow_uri, prefect_api, base / "prefect-home")
    proc = _hwnas(project, env, "run", "--stage", "first", "--stage", "second")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    [run_id] = re.findall(r"pipeline finished: MLflow run (\w+)", proc.stdout)
    yield project, run_id, env


def test_a_pipeline_on_an_mlflow_server_logs_there_and_lineage_reads_it_back(
        team_run, mlflow_uri, mlflow_home):
    from mlflow.tracking import MlflowClient

    from hwnas.lineage import dvc_lock_hashes

    project, run_id, env = team_run
    runs = _runs(mlflow_uri)
    [pipeline] = [r for r in runs if r.info.run_id == run_id]
    stages = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == run_id),
                    key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in stages] == ["stage:first", "stage:second"]
    first, second = stages
    [own] = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in
             {first.info.run_id, second.info.run_id}]
    assert own.info.run_name == "second-own"
    assert own.data.tags["mlflow.parentRunId"] == second.info.run_id
    assert all(r.info.status == "FINISHED" for r in (pipeline, first, second, own))
    assert pipeline.data.tags["hwnas.workspace"] == str(project.resolve())
    lock = dvc_lock_hashes("second", project / "dvc.lock")
    assert lock["dvc.outs.b.txt"] and {k: v for k, v in second.data.tags.items()
                                       if k.startswith("dvc.")} == lock
    assert second.data.metrics == {"score": 1.5}
    # the artifact went through the server to its --artifacts-destination; nothing local
    client = MlflowClient(tracking_uri=mlflow_uri)
    assert [a.path for a in client.list_artifacts(own.info.run_id)] == ["b.txt"]
    stored = list((mlflow_home / "artifacts").rglob("b.txt"))
    assert [p.read_text() for p in stored] == ["a"]
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()

    out = _hwnas(project, env, "lineage", own.info.run_id)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"second-own [{own.info.run_id}] FINISHED")
    assert f"  <- stage:second [{second.info.run_id}] FINISHED" in out.stdout
    assert f"stages of pipeline run {run_id}:" in lines
    for stage in (first, second):
        [line] = [x for x in lines if x.startswith(f"  - {stage.info.run_name} [")]
        assert line.endswith("(= dvc.lock)"), out.stdout


def test_hwnas_schedule_serves_a_cron_deployment_that_runs_when_the_server_says(
        tmp_path, mlflow_uri, prefect_api):
    import asyncio

    from prefect import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    project = make_project(tmp_path / "served")
    # the served process polls the server every second for runs (default 10 s)
    env = _team_env(mlflow_uri, prefect_api, tmp_path / "prefect-home",
                    PREFECT_RUNNER_POLL_FREQUENCY="1")
    log = tmp_path / "schedule.log"
    name = "hwnas-pipeline/nightly-search"

    async def deployment():
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    serve = _spawn([sys.executable, "-m", "hwnas.cli", "schedule", "--cron", "0 3 * * *"],
                   log, env, project)
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
            deadline = time.monotonic() + STARTUP_S
            while True:
                assert serve.poll() is None, _tail(log)
                try:
                    found = asyncio.run(deployment())
                    break
                except Exception as err:  # ObjectNotFound until the process has registered it
                    assert time.monotonic() < deadline, f"{err}\n{_tail(log)}"
                    time.sleep(0.5)
            assert [(s.schedule.cron, s.schedule.timezone, s.active)
                    for s in found.schedules] == [("0 3 * * *", "UTC", True)]
            assert not found.paused
            # a run triggered from the server (what the cron fires at 03:00), the two stages
            flow_run = run_deployment(name, parameters={"stages": ["first", "second"]},
                                      timeout=240, poll_interval=1)
            assert flow_run.state.is_completed(), f"{flow_run.state}\n{_tail(log)}"
            assert flow_run.deployment_id == found.id
            assert (project / "b.txt").read_text() == "a"  # the served process ran the stages
            [pipeline] = [r for r in _by_name(_runs(mlflow_uri), "pipeline")
                          if r.data.tags.get("hwnas.workspace") == str(project.resolve())]
            assert pipeline.info.status == "FINISHED"
            assert pipeline.data.tags["stages"] == "first,second"
            stop(serve)  # SIGTERM: the deployment pauses (README)
            assert serve.returncode is not None and "Traceback" not in _tail(log, 100_000)
            assert asyncio.run(deployment()).paused
    finally:
        stop(serve)


def test_a_teammate_pulls_the_outputs_from_a_dvc_remote_without_recomputing(
        team_run, mlflow_uri, tmp_path):
    project, run_id, env = team_run
    outputs = ("a.txt", "b.txt", "metrics.json")
    before = {n: (project / n).read_bytes() for n in outputs}
    _git(project, "add", "-A")  # dvc.lock, metrics.json, the outputs' .gitignore
    _git(project, "commit", "-qm", "pipeline run")

    # a remote that cannot be written (under a regular file: root ignores chmod): DVC's error
    (tmp_path / "a-file").write_text("not a folder")
    broken = tmp_path / "a-file" / "remote"
    assert _dvc(project, "remote", "add", "--local", "broken", str(broken)).returncode == 0
    push = _dvc(project, "push", "-r", "broken")
    assert push.returncode != 0 and "Traceback" not in push.stdout + push.stderr
    [line] = [x for x in push.stderr.splitlines() if x.startswith("ERROR:")]
    assert "Not a directory" in line and str(broken) in line, push.stderr
    assert {n: (project / n).read_bytes() for n in outputs} == before
    assert _dvc(project, "remote", "remove", "--local", "broken").returncode == 0

    remote = tmp_path / "remote"
    assert _dvc(project, "remote", "add", "-d", "team", str(remote)).returncode == 0
    _git(project, "commit", "-qam", "the team's DVC remote")
    push = _dvc(project, "push")
    assert push.returncode == 0, push.stderr
    assert [p for p in remote.rglob("*") if p.is_file()]  # a.txt and b.txt: one object ("a")

    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(project), str(clone))
    assert not (clone / "b.txt").exists()
    pull = _dvc(clone, "pull")
    assert pull.returncode == 0, pull.stderr
    assert {n: (clone / n).read_bytes() for n in outputs} == before
    status = _dvc(clone, "status")
    assert status.returncode == 0 and "Data and pipelines are up to date." in status.stdout, \
        status.stdout + status.stderr

    # the teammate's lineage: the runs on the server, the clone's dvc.lock matches them
    lineage = _hwnas(clone, env, "lineage", run_id)
    assert lineage.returncode == 0, lineage.stderr
    for stage in ("stage:first", "stage:second"):
        [line] = [x for x in lineage.stdout.splitlines() if x.startswith(f"  - {stage} [")]
        assert line.endswith("(= dvc.lock)"), lineage.stdout

    # the pipeline in the clone has nothing to compute: the pulled outputs stand
    mtimes = {n: (clone / n).stat().st_mtime_ns for n in outputs}
    owns = len(_by_name(_runs(mlflow_uri), "second-own"))
    rerun = _hwnas(clone, env, "run", "--stage", "first", "--stage", "second")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert {n: (clone / n).stat().st_mtime_ns for n in outputs} == mtimes
    runs = _runs(mlflow_uri)
    assert len(_by_name(runs, "second-own")) == owns  # the stage's command did not run
    [pipeline] = [r for r in _by_name(runs, "pipeline")
                  if r.data.tags.get("hwnas.workspace") == str(clone.resolve())]
    assert pipeline.info.status == "FINISHED"


def test_a_tracking_server_gone_mid_run_is_one_line_naming_it_and_the_outputs_stay(
        tmp_path, prefect_api):
    from hwnas.lineage import dvc_lock_hashes
    from hwnas.tracking import _no_answer

    project = make_project(tmp_path / "project", slow=True)
    with mlflow_server(tmp_path / "mlflow-server") as (uri, server):
        env = _team_env(uri, prefect_api, tmp_path / "prefect-home")
        out, err = tmp_path / "run.out", tmp_path / "run.err"
        with out.open("w") as o, err.open("w") as e:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hwnas.cli", "run",
                 "--stage", "first", "--stage", "second", "--stage", "slow"],
                cwd=project, env=env, stdout=o, stderr=e, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while not (project / "slow.started").exists():  # first and second done, slow writing
                assert proc.poll() is None, _tail(out) + _tail(err)
                assert time.monotonic() < deadline, _tail(out) + _tail(err)
                time.sleep(0.1)
            os.killpg(server.pid, signal.SIGKILL)  # the server and its uvicorn worker
            server.wait(timeout=30)
            deadline = time.monotonic() + 30
            while _no_answer(uri, timeout=1) is None:
                assert time.monotonic() < deadline, "the killed server still answers"
                time.sleep(0.1)
            (project / "slow.go").touch()
            gone = time.monotonic()
            rc = proc.wait(timeout=280)
            took = time.monotonic() - gone
        finally:
            stop(proc, grace_s=5)
    stdout, stderr = out.read_text(), err.read_text()
    assert rc == 1, stdout[-2000:] + stderr[-4000:]
    assert "Traceback" not in stdout + stderr and "╭" not in stdout + stderr, stderr
    errors = [x for x in stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: MLflow tracking server {uri}: unreachable ("), stderr[-4000:]
    # the stage itself ended on its own line, not MLflow's traceback
    assert f"slow: MLflow tracking server {uri}: unreachable (" in stderr, stderr[-4000:]
    assert took < 150, f"{took:.0f} s after the server went away"  # MLflow's own: minutes a call
    # what was computed stays: the finished stages recorded by DVC, the stopped stage's file
    assert [(project / n).read_text() for n in ("a.txt", "b.txt", "c.txt")] == ["a", "a", "c"]
    assert dvc_lock_hashes("second", project / "dvc.lock")["dvc.outs.b.txt"]
    status = _dvc(project, "status", "second", env=_base_env())
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
