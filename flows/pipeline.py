"""The pipeline as a Prefect flow: one task per DVC stage, run in order with
``dvc repro <stage>`` (DVC decides what is stale; Prefect caching stays off),
retried on failure, with an MLflow parent run and a child run per stage."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

# Embedded defaults: Prefect's state in the project, a patient temporary server.
os.environ.setdefault("PREFECT_HOME", str(Path(".prefect").resolve()))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from flows.stages import STAGES, dvc_stages, instances  # noqa: E402
from hwnas import layout  # noqa: E402
from hwnas.lineage import dvc_lock_hashes, stage_metrics  # noqa: E402
from hwnas.params import load_params  # noqa: E402
from hwnas.tracking import EXPERIMENT, PARENT_ENV, _mlflow, git_commit  # noqa: E402

LOCK = Path(".hwnas-pipeline.lock")


class _NoTraceback(logging.Filter):
    """Prefect logs a failed task's and flow's traceback; its message already names the
    error (and a failing stage has printed its own line), so the line stays and the trace
    goes, unless HWNAS_TRACEBACK is set."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not os.environ.get("HWNAS_TRACEBACK"):
            record.exc_info, record.exc_text = None, None
        return True


for _name in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_name).addFilter(_NoTraceback())


class PipelineBusy(RuntimeError):
    """Another pipeline holds this workspace."""


@contextlib.contextmanager
def workspace_lock(wait: bool = False, poll_s: float = 2.0):
    """One pipeline per workspace (DVC's own lock forbids two ``dvc repro``);
    a second one waits for the first or stops with a clear message."""
    with LOCK.open("a+") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    handle.seek(0)
                    owner = handle.read().strip() or "unknown"
                    raise PipelineBusy(f"another pipeline is running in this workspace "
                                       f"(pid {owner}); wait for it or use --wait") from None
                time.sleep(poll_s)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield handle.fileno()
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def process_group_guard():
    """Lead a process group of our own (children inherit it) and keep ``flows.reaper``
    watching from outside it: if this process dies inside the block, even by SIGKILL, the
    group dies with it. Leaving the block normally tells the reaper to stand down."""
    if os.getpgid(0) != os.getpid():
        os.setpgid(0, 0)
    reaper = subprocess.Popen([sys.executable, "-m", "flows.reaper", str(os.getpgid(0))],
                              start_new_session=True, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        yield
    finally:
        reaper.stdin.write(b"done")
        reaper.stdin.close()


def close_stale_runs(client, experiment_id: str) -> int:
    """Mark KILLED the runs an earlier pipeline of this workspace left RUNNING (its process
    is gone: SIGKILL, power loss), and every RUNNING run beneath them."""
    here = str(Path.cwd().resolve())
    stale = [r for r in client.search_runs([experiment_id],
                                           filter_string="attributes.status = 'RUNNING'")
             if r.data.tags.get("hwnas.workspace") == here  # compared here: a path may hold quotes
             and not _pid_alive(int(r.data.tags.get("hwnas.pid", "0")))]
    todo, closed = [r.info.run_id for r in stale], 0
    while todo:
        run_id = todo.pop()
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")
            closed += 1
        todo += [c.info.run_id for c in client.search_runs(
            [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")]
    return closed


def _pid_alive(pid: int) -> bool:
    from flows.reaper import alive

    return pid > 0 and alive(pid)


@task(retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE, task_run_name="{stage}")
def run_stage(stage: str, targets: list[str], parent_run_id: str, spec_hash: str,
              lock_fd: int | None = None, force: bool = False) -> str:
    """``dvc repro <targets>`` (the stage's instances) under an MLflow child run; the
    stage's own runs nest in it.
    ``dvc repro`` inherits the workspace lock, so the lock outlives a killed pipeline
    for as long as its stage runs."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    child = client.create_run(experiment, run_name=f"stage:{stage}",
                              tags={"mlflow.parentRunId": parent_run_id, "stage": stage,
                                    "git_commit": git_commit(),
                                    "hardware_spec_hash": spec_hash, **_owner()})
    run_id = child.info.run_id
    env = {**os.environ, PARENT_ENV: run_id,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    status = "FAILED"
    try:  # dvc repro without its per-stage hints (flows/dvc_repro.py)
        # forced: this stage alone (-s), or -f would force every stage upstream of it again
        cmd = [sys.executable, "-m", "flows.dvc_repro", *(["-f", "-s"] if force else []),
               *targets]
        proc = subprocess.run(cmd, env=env,
                              pass_fds=() if lock_fd is None else (lock_fd,))
        if proc.returncode == 0:
            status = "FINISHED"
            try:
                record_stage(client, experiment, run_id, stage)
            except Exception as err:  # the stage's work is done and kept: say, don't fail it
                print(f"note: stage {stage}: lineage not recorded in MLflow: {err}",
                      file=sys.stderr)
    finally:  # never left RUNNING, whatever failed
        client.set_terminated(run_id, status)
    if proc.returncode:
        raise RuntimeError(f"stage {stage!r} failed (dvc repro exit {proc.returncode}); "
                           "the previous outputs are kept")
    return run_id


def record_stage(client, experiment_id: str, run_id: str, stage: str) -> None:
    """After ``dvc repro``: the stage run and the stage's own runs get the content hashes
    DVC has just written to dvc.lock (so ``hwnas lineage`` matches it), and the stage run
    the numbers of the stage's metrics.json (so two pipelines can be compared)."""
    from mlflow.entities import Metric, RunTag

    own = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    # a run of an upstream stage that dvc repro rebuilt on the way gets its own stage's hashes
    def instance(name: str) -> str:  # a task stage's own runs are tagged by its bare name
        return stage if stage.split("@")[0] == name else name

    for rid, name in ((run_id, stage), *((r.info.run_id, instance(r.data.tags.get("stage", stage)))
                                        for r in own)):
        tags = [RunTag(k, v) for k, v in dvc_lock_hashes(name).items()]
        for i in range(0, len(tags), 100):  # MLflow takes at most 100 tags a batch
            client.log_batch(rid, tags=tags[i:i + 100])
    now = int(time.time() * 1000)
    metrics = [Metric(re.sub(r"[^\w\-. :/]", "_", k), v, now, 0)  # MLflow's name alphabet
               for k, v in stage_metrics(stage).items()]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


def log_headline(client, run_id: str, task: str) -> None:
    """The evaluation's headline figures on the pipeline run (compare pipelines by them)."""
    import json

    try:
        headline = json.loads(layout.task_path("HEADLINE", task).read_text())
        for key, value in headline.items():
            if isinstance(value, (int, float)):
                client.log_metric(run_id, key, float(value))
    except Exception as err:  # every stage succeeded: say, don't fail the pipeline
        print(f"note: headline not logged in MLflow: {err}", file=sys.stderr)


def _owner() -> dict[str, str]:
    """Which workspace and process own a run (so a later pipeline can close it)."""
    return {"hwnas.workspace": str(Path.cwd().resolve()), "hwnas.pid": str(os.getpid())}


@flow(name="hwnas-pipeline")
def pipeline(stages: list[str] | None = None, params_path: str = "params.yaml",
             wait: bool = False, force: bool = False,
             task_name: str = layout.DEFAULT_TASK) -> str:
    """Validate params, then run each stage in order (a task's stages for ``task_name``).
    Returns the MLflow parent run id."""
    from hardware.spec import load_spec

    params = load_params(params_path, task_name)  # schema-checked before any stage runs
    spec_hash = load_spec(params["base"]["hardware"]).spec_hash()
    known = dvc_stages()
    if unknown := [s for s in stages or () if s not in known]:
        raise ValueError(f"unknown stage {unknown[0]!r} (dvc.yaml has: {', '.join(known)})")
    wanted = [s for s in (stages or STAGES) if s in known]
    mlflow = _mlflow()
    mlflow.set_experiment(EXPERIMENT)
    client = mlflow.MlflowClient()
    with workspace_lock(wait) as lock_fd:
        experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
        close_stale_runs(client, experiment_id)
        parent = client.create_run(experiment_id, run_name="pipeline",
                                   tags={"git_commit": git_commit(),
                                         "hardware_spec_hash": spec_hash,
                                         "stages": ",".join(wanted), "task": task_name,
                                         **_owner()})
        status = "FAILED"
        try:
            for stage in wanted:
                if not (targets := instances(stage, params, task_name)):
                    continue  # a foreach stage with nothing to build
                start = time.monotonic()
                name = targets[0] if targets[0].endswith("@" + task_name) else stage
                run_stage(name, targets, parent.info.run_id, spec_hash, lock_fd, force)
                client.log_metric(parent.info.run_id, f"seconds.{stage}",
                                  round(time.monotonic() - start, 1))
            if "evaluate" in wanted:  # else the headline is an earlier run's
                log_headline(client, parent.info.run_id, task_name)
            status = "FINISHED"
        finally:
            client.set_terminated(parent.info.run_id, status)
    return parent.info.run_id
