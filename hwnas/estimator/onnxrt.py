"""Timing in ONNX Runtime, the runtime device teams deploy with, by a protocol that holds
on a shared machine.

- The CPU provider, batch 1, one intra-op and one inter-op thread, sequential execution,
  all graph optimizations: the whole inference runs on the calling thread.
- A dedicated process pinned to one core (``Timer``) that the calling process keeps off while
  the timer lives: the scheduler neither migrates the timing nor shares its core, and the
  parent's exports (torch's spinning OpenMP threads) stay on the other cores.
- Warm-up calls, then each repeat loops a model for at least ``min_repeat_ms``.
- Repeats are interleaved: each round times every model of a batch once, in a fresh random
  order, so drift (another job starting, a frequency change) hits all models alike. Each
  repeat starts with one untimed call: the model before it left the caches cold, which made
  small networks 4-13% slower in 2 ms repeats than in 5 ms ones (bench/RESULTS.md).
- The thread's CPU time by default: with one intra-op thread it is all of the inference's
  work, and it is not inflated while other processes hold the core (the choice is measured
  in bench/RESULTS.md).
- The median over repeats is the figure (``summary``).
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLOCKS = {"thread": time.thread_time_ns, "wall": time.perf_counter_ns}
OPSET = 17


@dataclass(frozen=True)
class Protocol:
    repeats: int = 5
    warmup: int = 2
    min_repeat_ms: float = 2.0
    clock: str = "thread"


def export(module, shape: tuple[int, ...], path: Path) -> Path:
    """``module`` (eval mode, random weights) as an ONNX file with a static input ``x``."""
    import warnings

    import torch

    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks fixed at export
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: 100x faster
        torch.onnx.export(module, (torch.zeros(*shape),), str(path), input_names=["x"],
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    return path


def session(path: str | Path, profile_prefix: str | None = None):
    """An inference session under the protocol's settings (profiled with a prefix)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _feed(sess, rng: np.random.Generator) -> dict:
    i = sess.get_inputs()[0]
    return {i.name: rng.standard_normal(i.shape).astype(np.float32)}


def _loop_counts(sessions, feeds, protocol: Protocol) -> list[int]:
    """Warm each session up; the calls per repeat that last ``min_repeat_ms``."""
    now = CLOCKS[protocol.clock]
    inner = []
    for s, f in zip(sessions, feeds):
        per_call = None
        for _ in range(1 + protocol.warmup):
            t = now()
            s.run(None, f)
            dt = now() - t
            per_call = dt if per_call is None else min(per_call, dt)
        inner.append(max(1, int(protocol.min_repeat_ms * 1e6 / max(per_call, 1_000))))
    return inner


def _interleaved(sessions, protocol: Protocol, rng) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Warm-up, then the repeats, each timing every session once in a fresh order: the calls
    per repeat, and the protocol clock's and the wall's nanoseconds ``(n, repeats)``."""
    now = CLOCKS[protocol.clock]
    feeds = [_feed(s, rng) for s in sessions]
    inner = _loop_counts(sessions, feeds, protocol)
    clock = np.empty((len(sessions), protocol.repeats))
    wall = np.empty_like(clock)
    for r in range(protocol.repeats):
        for i in rng.permutation(len(sessions)):
            s, f, n = sessions[i], feeds[i], inner[i]
            s.run(None, f)  # untimed: the previous model left the caches cold
            t, w = now(), time.perf_counter_ns()
            for _ in range(n):
                s.run(None, f)
            clock[i, r], wall[i, r] = now() - t, time.perf_counter_ns() - w
    return inner, clock, wall


def time_files(paths: list[str], protocol: Protocol, seed: int = 0) -> np.ndarray:
    """Milliseconds per call of each ONNX file: ``(len(paths), repeats)``, interleaved."""
    inner, clock, _ = _interleaved([session(p) for p in paths], protocol,
                                   np.random.default_rng(seed))
    return clock / np.array(inner)[:, None] / 1e6


_UNIT = re.compile(r"^/(stem|head|blocks/blocks\.(\d+))/")


def node_unit(name: str, n_blocks: int) -> int:
    """The unit a profiled node belongs to, from the module path ONNX export keeps in its
    name (0 stem, 1.. blocks, ``n_blocks + 1`` head); -1 for nodes the runtime added
    (layout reorders) or that no module owns."""
    m = _UNIT.match(name)
    if m is None:
        return -1
    if m.group(1) == "stem":
        return 0
    return n_blocks + 1 if m.group(1) == "head" else int(m.group(2)) + 1


def _node_times(trace: str, inner: int, repeats: int, skip: int) -> dict[str, np.ndarray]:
    """Per node, its mean duration (ms) over each repeat's timed runs, from a profiler
    trace: ``skip`` warm-up runs, then per repeat one untimed run and ``inner`` timed ones."""
    import json

    events = json.loads(Path(trace).read_text())
    starts = np.sort([e["ts"] for e in events if e.get("name") == "model_run"])
    out: dict[str, np.ndarray] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        rep, pos = divmod(int(np.searchsorted(starts, e["ts"], side="right")) - 1 - skip,
                          inner + 1)
        if 0 <= rep < repeats and pos >= 1:
            acc = out.setdefault(e["name"][:-len("_kernel_time")], np.zeros(repeats))
            acc[rep] += e["dur"] / 1e3 / inner
    return out


def profile_files(paths: list[str], protocol: Protocol, seed: int = 0) -> list[dict]:
    """Each ONNX file under ONNX Runtime's profiler, interleaved like ``time_files``: per
    file, each node's milliseconds per call in each repeat, as the runtime executes it
    (after its own fusions). The profiler's times are wall time; each repeat's are scaled
    by its clock time over its wall time, so the protocol's clock holds."""
    with tempfile.TemporaryDirectory(prefix="hwnas-prof-") as tmp:
        sessions = [session(p, str(Path(tmp) / f"p{i}")) for i, p in enumerate(paths)]
        inner, clock, wall = _interleaved(sessions, protocol, np.random.default_rng(seed))
        scale = clock / np.maximum(wall, 1)
        out = []
        for i, s in enumerate(sessions):
            nodes = _node_times(s.end_profiling(), inner[i], protocol.repeats,
                                1 + protocol.warmup)
            out.append({k: v * np.minimum(scale[i], 1.0) for k, v in nodes.items()})
    return out


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


class Timer:
    """A dedicated timing process pinned to one core (the last one by default); ``time``
    exports modules to a scratch folder and times them there. Use as a context manager."""

    def __init__(self, protocol: Protocol, core: int | None = None):
        import multiprocessing as mp

        self.protocol = protocol
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        self.core = cores[-1] if core is None else core
        self._pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"),
                                         initializer=_pin, initargs=(self.core,))
        # The core is the timer's alone: this process (exporting with torch, whose idle
        # OpenMP threads spin for a while) keeps off it, where there is another core.
        self._parent_cores = set(cores)
        if len(cores) > 1:
            os.sched_setaffinity(0, set(cores) - {self.core})
        self._tmp = tempfile.TemporaryDirectory(prefix="hwnas-ort-")
        self._n = 0

    def __enter__(self) -> "Timer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
        self._tmp.cleanup()
        if len(self._parent_cores) > 1:
            os.sched_setaffinity(0, self._parent_cores)

    def time_files(self, paths: list[str | Path], seed: int = 0) -> np.ndarray:
        return self._pool.submit(time_files, [str(p) for p in paths], self.protocol,
                                 seed).result()

    def time_modules(self, modules: list[tuple], seed: int = 0) -> np.ndarray:
        """``(module, input shape)`` pairs: milliseconds per call, ``(n, repeats)``."""
        return self._exported(modules, lambda paths: self.time_files(paths, seed))

    def profile_modules(self, modules: list[tuple], seed: int = 0) -> list[dict]:
        """``(module, input shape)`` pairs: each node's milliseconds per call and repeat."""
        return self._exported(modules, lambda paths: self._pool.submit(
            profile_files, [str(p) for p in paths], self.protocol, seed).result())

    def _exported(self, modules: list[tuple], run):
        paths = []
        for module, shape in modules:
            self._n += 1
            paths.append(export(module, shape, Path(self._tmp.name) / f"{self._n}.onnx"))
        try:
            return run(paths)
        finally:
            for p in paths:
                p.unlink(missing_ok=True)


def summary(times: np.ndarray) -> np.ndarray:
    """The robust figure per model: the median over repeats."""
    return np.median(times, axis=-1)
