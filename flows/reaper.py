"""Watches a pipeline process from outside its process group and, if it dies without
saying it is done (SIGKILL, a crash), ends the whole group: ``dvc repro``, the stage, its
workers and the temporary Prefect server die with it instead of running on as orphans.

    python -m flows.reaper PGID     (stdin: a pipe from the pipeline process)

The pipeline writes ``done`` to the pipe when it ends normally; its death closes the pipe
without it. Nothing polls.
"""
from __future__ import annotations

import os
import signal
import sys
import time


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False


def stop(proc, grace_s: float = 20.0) -> None:
    """Stop a ``subprocess.Popen`` that leads its own group (``start_new_session``) and
    everything in the group: SIGTERM, then SIGKILL to what is left after ``grace_s``."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (proc.poll() is None or group_alive(proc.pid)):
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def end_group(pgid: int, grace_s: float = 3.0) -> None:
    """SIGTERM the group, then SIGKILL what is left after ``grace_s``."""
    if not group_alive(pgid):
        return
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    if sys.stdin.buffer.read().strip() != b"done":  # EOF without "done": the pipeline died
        end_group(int(sys.argv[1]))
