"""The fan-out on a real Dask cluster (``dask scheduler`` + 2 ``dask worker`` processes on
127.0.0.1, started here and stopped after): the search scores the same candidates the
same on the cluster as in local processes, a worker killed mid-search loses nothing, and
an address where no scheduler answers is one clear line."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from flows.reaper import stop
from hwnas import layout
from test_kill_resume import ROOT, _env, _run, _finish, template  # noqa: F401 (a fixture)

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


def _scheduler_and_workers(workers: int, logs: Path) -> tuple[str, list[subprocess.Popen]]:
    """``dask scheduler`` and ``workers`` one-thread ``dask worker`` processes on 127.0.0.1."""
    address = f"tcp://127.0.0.1:{free_port()}"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                   "--no-dashboard", log=logs / "scheduler.log")]
    procs += [_dask("worker", address, "--nthreads", "1", "--no-dashboard", "--memory-limit", "0",
                    "--name", f"w{i}", log=logs / f"worker{i}.log") for i in range(workers)]
    return address, procs


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two one-thread workers; yields (address, client)."""
    from distributed import Client

    address, procs = _scheduler_and_workers(2, tmp_path_factory.mktemp("dask"))
    try:
        client = Client(address, timeout="60s", set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        yield address, client
        client.close()
    finally:
        for p in reversed(procs):
            stop(p)


def _trained_workspace(source: Path, ws: Path, workers: int) -> Path:
    """A copy of ``source`` with ``search.workers`` set and the supernet trained."""
    import yaml

    shutil.copytree(source, ws)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["search"]["workers"] = workers
    (ws / "params.yaml").write_text(yaml.safe_dump(params))
    _run(ws, "train_supernet")
    return ws


def _search_on(ws: Path, address: str) -> subprocess.Popen:
    """The search stage on the cluster at ``address``, returned once it journaled candidates."""
    with (ws / "search.log").open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stages.search"], cwd=ws,
                                env={**_env(ws), "HWNAS_CLUSTER": address},
                                stdout=log, stderr=subprocess.STDOUT)
    journal = ws / layout.SEARCH_JOURNAL
    deadline = time.monotonic() + 180
    while not (journal.exists() and any(journal.glob("*.jsonl"))):
        assert proc.poll() is None, (ws / "search.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "no candidate journaled in 180 s"
        time.sleep(0.05)
    return proc


def _candidates(ws: Path) -> pd.DataFrame:
    df = pd.read_parquet(ws / layout.CANDIDATES)
    return df[["arch", "score", "latency_ms"]].sort_values("arch").reset_index(drop=True)


def test_search_on_the_cluster_equals_local_and_survives_a_killed_worker(template, tmp_path,  # noqa: F811
                                                                          cluster):
    address, client = cluster
    ws = _trained_workspace(template, tmp_path / "local", workers=2)
    remote = tmp_path / "remote"
    shutil.copytree(ws, remote)
    _run(ws, "search")
    proc = _search_on(remote, address)
    pids = list(client.run(os.getpid).values())
    os.kill(pids[0], signal.SIGKILL)  # its nanny starts another; its tasks rerun
    out = _finish(remote, "search", proc)
    assert f"scoring candidates on the Dask cluster at {address}" in out
    assert "Traceback" not in out
    local, on_cluster = _candidates(ws), _candidates(remote)
    assert len(local) > 0
    pd.testing.assert_frame_equal(local, on_cluster)
    client.wait_for_workers(2, timeout=60)  # the killed worker came back


def test_an_address_without_a_scheduler_is_one_clear_line(template, tmp_path, monkeypatch):  # noqa: F811
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


def test_a_cluster_gone_mid_search_is_one_line_and_the_journal_resumes_it(template, tmp_path):  # noqa: F811
    """The scheduler killed mid-search: the stage ends with one line naming the cluster; the
    candidates scored so far are in the journal, and a rerun (here on local processes)
    scores only the rest."""
    ws = _trained_workspace(template, tmp_path / "ws", workers=1)
    address, procs = _scheduler_and_workers(1, tmp_path)
    try:
        proc = _search_on(ws, address)
        stop(procs[0])  # the scheduler goes away
        assert proc.wait(timeout=120) != 0
    finally:
        for p in reversed(procs):
            stop(p)
    out = (ws / "search.log").read_text()
    assert "Traceback" not in out, out[-3000:]
    assert f"HWNAS_CLUSTER={address}: the cluster went away mid-run" in out, out[-2000:]
    assert not (ws / layout.CANDIDATES).exists()  # no partial output
    rerun = _run(ws, "search")
    resumed = re.search(r"\((\d+) from the journal", rerun)
    assert resumed and int(resumed.group(1)) > 0, rerun[-2000:]
