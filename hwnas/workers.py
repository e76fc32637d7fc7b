"""Where independent work runs: local worker processes, or a Dask cluster.

``Fanout`` is the one way the search's candidate scoring, the from-scratch runs
(baseline, the supernet's proof) and any other batch of independent calls leave the
main process. By default it spawns local processes that never outlive their parent (a
SIGKILL of the parent reaches no worker, and a spawned worker would otherwise wait for
work forever). When ``HWNAS_CLUSTER`` names a Dask scheduler (``tcp://HOST:8786``) the
same functions run on that cluster's workers instead. Where work runs is no parameter:
the functions and their inputs are the same, so the results are too, and no DVC stage
goes stale. The cluster's workers need this package installed, as here.

``setup(*setup_args)`` runs once in each worker before its tasks (on a cluster, as a
worker plugin: a worker that joins or restarts later runs it too), so large shared
inputs such as the supernet's weights and the data travel once per worker, not per task.
What it returns is each task's first argument: ``fn(state, *args)``. It is kept per
fan-out (a fresh key), so two runs sharing a cluster never see each other's state, and
the plugin leaves the cluster when the fan-out closes. Cluster workers must run one task
at a time (``dask worker --nthreads 1``): tasks seed torch's process-wide generator.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence

from hwnas.errors import UserError, one_line

CLUSTER_ENV = "HWNAS_CLUSTER"
CONNECT_TIMEOUT_S = 10

# in a worker process: what each fan-out's setup returned, by the fan-out's key
_STATE: dict[str, object] = {}


class ClusterError(UserError):
    """The Dask cluster named by ``HWNAS_CLUSTER`` does not answer, or went away."""


def cluster_address() -> str | None:
    """The Dask scheduler ``HWNAS_CLUSTER`` names, or None (local processes)."""
    return os.environ.get(CLUSTER_ENV, "").strip() or None


def connect(address: str):
    """A ``distributed.Client`` of the scheduler at ``address``; ClusterError if none answers."""
    import logging

    from distributed import Client

    # the client logs a lost scheduler with tracebacks; the fan-out reports it in one line
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("distributed")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ClusterError(f"{CLUSTER_ENV}={address}: no Dask scheduler answers there "
                           f"({one_line(str(err), 120)})") from None


def pool(workers: int, initializer=None, initargs: tuple = ()):
    """A ``ProcessPoolExecutor`` of spawned workers that leave when the parent is gone."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start, initargs=(os.getpid(), initializer, initargs))


def _setup(key: str, setup: Callable | None, args: tuple) -> None:
    _STATE[key] = setup(*args) if setup is not None else None


def _call(key: str, fn: Callable, *args):
    return fn(_STATE[key], *args)


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


def _setup_plugin(key: str, setup: Callable | None, setup_args: tuple):
    from distributed import WorkerPlugin

    class Setup(WorkerPlugin):
        def setup(self, worker) -> None:
            _setup(key, setup, setup_args)

        def teardown(self, worker) -> None:
            _STATE.pop(key, None)

    return Setup()


# what a cluster that goes away mid-run raises (the client's connection closes, its
# futures are cancelled); a task's own error is not among them and stays as it was
def _lost_errors() -> tuple[type[BaseException], ...]:
    from concurrent.futures import CancelledError

    from distributed.client import ClosedClientError, FutureCancelledError
    from distributed.comm.core import CommClosedError

    return (CancelledError, FutureCancelledError, ClosedClientError, CommClosedError, OSError,
            TimeoutError)


class Fanout:
    """Local processes (``workers`` of them) or the cluster of ``HWNAS_CLUSTER``; tasks
    ``fn(state, *args)`` get what ``setup(*setup_args)`` returned in their worker."""

    def __init__(self, workers: int, setup: Callable | None = None, setup_args: tuple = ()):
        self.address, self.key = cluster_address(), f"hwnas-{uuid.uuid4().hex}"
        self._client = None
        if self.address is None:
            self.executor = pool(workers, _setup, (self.key, setup, setup_args))
            return
        self._client = connect(self.address)
        try:
            if threads := sorted({n for n in self._client.nthreads().values() if n > 1}):
                raise ClusterError(f"{CLUSTER_ENV}={self.address}: its workers run {threads[-1]} "
                                   f"tasks at once; start them with dask worker --nthreads 1 "
                                   f"(--nworkers N for N per machine)")
            self._client.register_plugin(_setup_plugin(self.key, setup, setup_args),
                                         name=self.key)
            self.executor = self._client.get_executor(pure=False)
        except ClusterError:
            self._client.close()
            raise
        except Exception as err:  # a worker's setup failed (hwnas missing there, ...)
            self._client.close()
            raise ClusterError(f"{CLUSTER_ENV}={self.address}: the workers could not set up "
                               f"({type(err).__name__}: {one_line(str(err), 120)})") from None

    @property
    def where(self) -> str:
        return f"the Dask cluster at {self.address}" if self.address else "local processes"

    def map(self, fn: Callable, args: Sequence[tuple]) -> list:
        """``[fn(state, *a) for a in args]``, in order."""
        out: list = [None] * len(args)
        for i, result in self.each(fn, args):
            out[i] = result
        return out

    def each(self, fn: Callable, args: Iterable[tuple]) -> Iterator[tuple[int, object]]:
        """``(i, fn(state, *args[i]))`` as each finishes."""
        from concurrent.futures import as_completed

        lost = _lost_errors() if self.address else ()
        try:
            futures = {self.executor.submit(_call, self.key, fn, *a): i
                       for i, a in enumerate(args)}
            for f in as_completed(futures):
                yield futures[f], f.result()
        except lost as err:
            if self._client.status == "running":  # the task's own error, not the cluster's
                raise
            detail = one_line(str(err), 100)
            raise ClusterError(f"{CLUSTER_ENV}={self.address}: the cluster went away mid-run "
                               f"({type(err).__name__}{': ' + detail if detail else ''}); "
                               f"rerun once it is back") from None

    def close(self) -> None:
        if self._client is not None:
            try:
                self.executor.shutdown(wait=False)
                if self._client.status == "running":  # the state leaves the workers
                    self._client.unregister_worker_plugin(self.key)
                self._client.close(timeout=CONNECT_TIMEOUT_S)
            except _lost_errors():
                pass  # a cluster already gone has nothing left to close
        else:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Fanout:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
