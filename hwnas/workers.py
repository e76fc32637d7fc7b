"""Worker processes that never outlive their parent: a SIGKILL of the parent reaches no
worker (no shutdown is sent), and a spawned worker would wait for work forever."""
from __future__ import annotations

import os


def pool(workers: int, initializer=None, initargs: tuple = ()):
    """A ``ProcessPoolExecutor`` of spawned workers that leave when the parent is gone."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start, initargs=(os.getpid(), initializer, initargs))


def _start(parent: int, initializer, initargs: tuple) -> None:
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()
    if initializer is not None:
        initializer(*initargs)
