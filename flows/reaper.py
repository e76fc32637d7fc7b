"""Watches a pipeline process from outside its process group and, once it is gone (even
by SIGKILL), ends the whole group: ``dvc repro``, the stage, its workers and the temporary
Prefect server die with the pipeline instead of running on as orphans.

    python -m flows.reaper PID PGID
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


def main(pid: int, pgid: int, poll_s: float = 0.2, grace_s: float = 3.0) -> None:
    while alive(pid):
        time.sleep(poll_s)
    if group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(poll_s)
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
