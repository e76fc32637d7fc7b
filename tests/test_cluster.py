"""The fan-out on a real Dask cluster (``dask scheduler`` + 2 ``dask worker`` processes on
127.0.0.1, started here and stopped after): the search scores the same candidates the
same on the cluster as in local processes, a worker killed mid-search loses nothing, and
an address where no scheduler answers is one clear line."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hwnas import layout
from test_kill_resume import ROOT, _env, _run, _start, _finish, template  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.servers]  # .ci/run runs them: make test-servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask(*args: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two one-thread workers; yields (address, client)."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                   "--no-dashboard", log=logs / "scheduler.log")]
    try:
        for i in range(2):
            procs.append(_dask("worker", address, "--nthreads", "1", "--no-dashboard",
                               "--memory-limit", "0", "--name", f"w{i}",
                               log=logs / f"worker{i}.log"))
        client = Client(address, timeout="60s", set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        yield address, client
        client.close()
    finally:
        for p in reversed(procs):
            _stop(p)


def _candidates(ws: Path) -> pd.DataFrame:
    df = pd.read_parquet(ws / layout.CANDIDATES)
    return df[["arch", "score", "latency_ms"]].sort_values("arch").reset_index(drop=True)


def test_search_on_the_cluster_equals_local_and_survives_a_killed_worker(template, tmp_path,
                                                                          cluster):
    import yaml

    address, client = cluster
    ws = tmp_path / "local"
    shutil.copytree(template, ws)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["search"]["workers"] = 2
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    _run(ws, "train_supernet")
    remote = tmp_path / "remote"
    shutil.copytree(ws, remote)
    _run(ws, "search")

    env = {**_env(remote), "HWNAS_CLUSTER": address}
    with (remote / "search.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stages.search"], cwd=remote, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    journal = remote / layout.SEARCH_JOURNAL
    deadline = time.monotonic() + 120
    while not (journal.exists() and any(journal.glob("*.jsonl"))):  # the first candidates scored
        assert proc.poll() is None, (remote / "search.log").read_text()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pids = list(client.run(os.getpid).values())
    os.kill(pids[0], signal.SIGKILL)  # its nanny starts another; its tasks rerun
    out = _finish(remote, "search", proc)
    assert f"scoring candidates on the Dask cluster at {address}" in out
    assert "Traceback" not in out
    local, on_cluster = _candidates(ws), _candidates(remote)
    assert len(local) > 0
    pd.testing.assert_frame_equal(local, on_cluster)
    client.wait_for_workers(2, timeout=60)  # the killed worker came back


def test_an_address_without_a_scheduler_is_one_clear_line(template, tmp_path, monkeypatch):
    from hwnas.workers import ClusterError, Fanout

    dead = f"tcp://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HWNAS_CLUSTER", dead)
    with pytest.raises(ClusterError, match=f"HWNAS_CLUSTER={dead}: no Dask scheduler answers"):
        Fanout(2)
    ws = tmp_path / "ws"
    shutil.copytree(template, ws)
    proc = subprocess.run([sys.executable, "-m", "hwnas.cli", "run", "--cluster", dead],
                          cwd=ws, env=_env(ws), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: HWNAS_CLUSTER={dead}: no Dask scheduler answers there "
        f"{proc.stderr.split('there ', 1)[1].strip()}"]
