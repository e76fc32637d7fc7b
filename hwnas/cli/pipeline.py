"""Commands on the pipeline: run, schedule, lineage."""
from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from hwnas import layout
from hwnas.cli.app import app
from hwnas.cli.inputs import fail, one_line


@app.command()
def run(
    stages: Annotated[Optional[list[str]], typer.Option(
        "--stage", help="Run only these stages (repeatable); default: the whole pipeline.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for a pipeline already running here.")] = False,
    force: Annotated[bool, typer.Option(help="Rerun the stages even if DVC finds them up to "
                                        "date (e.g. after a library upgrade).")] = False,
    task: Annotated[str, typer.Option(help="The task's pipeline: classification, detection or "
                                      "segmentation "
                                      "(added to params.yaml tasks when missing).")
                    ] = layout.DEFAULT_TASK,
    cluster: Annotated[Optional[str], typer.Option(
        help="Fan independent work (search scoring, from-scratch runs) out over the Dask "
             "cluster of this scheduler (tcp://HOST:8786); default: $HWNAS_CLUSTER, else "
             "local processes. Changes no result.")] = None,
):
    """Run the pipeline (DVC stages chained by a Prefect flow, tracked in MLflow)."""
    run_id = _run_flow(stages, wait, force, task, cluster)
    typer.echo(f"pipeline finished: MLflow run {run_id}")
    if (not stages or "evaluate" in stages) and (line := headline()):  # else an earlier run's
        typer.echo(f"  result:   {line}")
    typer.echo(f"  report:   {layout.EVALUATE / 'report.md'} (pareto.png beside it)")
    _where_runs(run_id)


@app.command()
def codesign(
    task: Annotated[str, typer.Option(help="The task whose supernet every chip is searched "
                                      "with (added to params.yaml codesign.tasks).")
                    ] = layout.DEFAULT_TASK,
    wait: Annotated[bool, typer.Option(help="Wait for a pipeline already running here.")] = False,
    force: Annotated[bool, typer.Option(help="Rerun every point's stage even if DVC finds it up "
                                        "to date (estimators and search journals that match "
                                        "are still reused).")] = False,
    cluster: Annotated[Optional[str], typer.Option(
        help="Score search candidates on this Dask cluster (as for hwnas run).")] = None,
):
    """Which accelerator for the task, and which network on it: per point of params.yaml's
    codesign.grid, microbenchmarks, an estimator and the search against the task's one
    supernet (stages codesign@<task>-<point>, then codesign_report@<task>; the task's
    supernet first, where it is stale)."""
    import json

    from hwnas.codesign.grid import GridError, check_as_dvc_reads, specs
    from hwnas.params import PARAMS_FILE, ParamsError, load_params

    try:
        cfg = load_params(task=task)["codesign"]
        specs(cfg["base"], cfg["grid"])  # a bad point is refused before anything runs
        check_as_dvc_reads(PARAMS_FILE, cfg["grid"])
    except (ParamsError, GridError) as err:
        fail(f"params.yaml: {err}" if isinstance(err, GridError) else str(err))
    run_id = _run_flow(["codesign", "codesign_report"], wait, force, task, cluster,
                       also_in="codesign.tasks")
    out = layout.codesign_dir(task)
    typer.echo(f"codesign finished: MLflow run {run_id}")
    try:
        s = json.loads((out / "metrics.json").read_text())
        pick = s["pick"]
        typer.echo(f"  result:   {s['points_at_least_40pct']} of {s['points']} points with a "
                   f"network at least 40% below the chip's baseline latency"
                   + (f"; within {s['area_budget_mm2']:g} mm2: {pick['key']} at "
                      f"{pick['best_latency_ms'] * 1e3:.1f} us" if pick else ""))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    typer.echo(f"  report:   {out / 'report.md'} (table.csv, pareto.png, cross.png)")
    _where_runs(run_id)


@app.command()
def findings(
    task: Annotated[str, typer.Option(help="The task whose pipeline the findings are measured "
                                      "on (added to params.yaml findings.tasks).")
                    ] = layout.DEFAULT_TASK,
    wait: Annotated[bool, typer.Option(help="Wait for a pipeline already running here.")] = False,
    force: Annotated[bool, typer.Option(help="Rerun the stage even if DVC finds it up to date "
                                        "(journaled searches and runs are still reused).")
                     ] = False,
    cluster: Annotated[Optional[str], typer.Option(
        help="Score search candidates on this Dask cluster (as for hwnas run).")] = None,
):
    """The article's findings on the task's pipeline (stage findings@<task>, after the task's
    stages where they are stale): the ablation as four searches, expert rules alone and across
    tasks, curation, where FLOPs mislead, the zero-shot proxies and their chain against the
    one-shot search; every chosen network trained from scratch and judged."""
    import json

    from hwnas.findings import FindingsError, rules_sources
    from hwnas.params import ParamsError, load_params

    try:  # a front to learn rules from that no run wrote is refused before anything runs
        rules_sources(load_params(task=task)["findings"]["rules_from"], task)
    except (ParamsError, FindingsError) as err:
        fail(str(err))
    run_id = _run_flow(["findings"], wait, force, task, cluster, also_in="findings.tasks")
    typer.echo(f"findings finished: MLflow run {run_id}")
    try:
        m = json.loads((layout.FINDINGS / "metrics.json").read_text())
        typer.echo("  result:   latency reduction " + ", ".join(
            f"{k.split('.')[1].upper()} {100 * m[k]:.1f}%" for k in m
            if k.startswith("ablation.") and k.endswith(".latency_reduction") and m[k] is not None)
            + (f"; expert rules alone {100 * m['expert_only.latency_reduction']:.1f}%"
               if m.get("expert_only.latency_reduction") is not None else ""))
        proxy, pct = m["zeroshot.proxy"], lambda x: "-" if x is None else f"{100 * x:.1f}%"
        typer.echo(f"  zero-shot: {proxy} tau {m[f'zeroshot.{proxy}_tau']:+.2f} (params "
                   f"{m['zeroshot.params_tau']:+.2f}); latency reduction of the chain "
                   f"{pct(m['zeroshot.chain.latency_reduction'])}, of the one-shot search alone "
                   f"at its compute {pct(m['zeroshot.oneshot.latency_reduction'])}")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    typer.echo(f"  report:   {layout.FINDINGS / 'report.md'}")
    _where_runs(run_id)


def _run_flow(stages: list[str] | None, wait: bool, force: bool, task: str,
              cluster: str | None, also_in: str | None = None) -> str:
    """The pipeline flow for ``task`` over ``stages``: checks first (cluster, params, a busy
    workspace), one line and exit 2 on bad input; then ``task`` joins params.yaml's ``tasks``
    (and the list at ``also_in``, e.g. ``codesign.tasks``). Returns the MLflow parent run id."""
    from hwnas.params import ParamsError, enable_task, load_params
    from hwnas.tasks import TASKS
    from hwnas.workers import CLUSTER_ENV, ClusterError, cluster_address, connect

    if cluster:
        os.environ[CLUSTER_ENV] = cluster  # the stages' processes inherit it
    if address := cluster_address():
        try:
            connect(address).close()
        except ClusterError as err:
            fail(str(err))

    if task not in TASKS:
        fail(f"--task: unknown task {task!r} (known: {', '.join(TASKS)})")
    try:
        load_params(task=task)
    except ParamsError as err:
        fail(str(err))
    tracking_store(must_exist=False, writable=True)
    from flows.stages import dvc_stages

    known = dvc_stages()
    if unknown := [s for s in stages or () if s not in known]:
        fail(f"unknown stage {unknown[0]!r} (dvc.yaml has: {', '.join(known)})")
    from flows.pipeline import PipelineBusy, pipeline, process_group_guard, workspace_lock

    if not wait:
        try:
            with workspace_lock():  # a busy workspace is refused before params.yaml changes
                pass
        except PipelineBusy as err:
            fail(str(err))
    try:
        for where in ("tasks", also_in) if also_in else ("tasks",):
            if enable_task(task, where=where):
                typer.echo(f"params.yaml: {where} now include {task} (its stages join "
                           f"dvc.yaml's pipeline: dvc status and dvc repro see them)")
    except ParamsError as err:
        fail(str(err))
    layout.use_task(task)
    try:
        with process_group_guard():  # a killed run takes its children with it
            run_id = pipeline(stages=stages, wait=wait, force=force, task_name=task)
    except (PipelineBusy, ValueError) as err:
        fail(str(err))
    except Exception as err:  # a failed stage, or a bug: one line, the outputs are kept
        if os.environ.get("HWNAS_TRACEBACK"):
            raise
        from hwnas.tracking import unreachable

        if gone := unreachable(err):  # the tracking server went away mid-run
            typer.echo(f"error: {gone}; the stages' outputs are kept", err=True)
            raise typer.Exit(1)
        what = "" if isinstance(err, RuntimeError) else f"{type(err).__name__}: "
        typer.echo(f"error: {what}{err} (HWNAS_TRACEBACK=1 shows where)", err=True)
        raise typer.Exit(1)
    return run_id


def _where_runs(run_id: str) -> None:
    from hwnas.tracking import tracking_uri

    uri = tracking_uri()  # a team's server, or the local store a UI has to be started for
    where = (uri if uri.startswith(("http://", "https://"))
             else f"mlflow ui --backend-store-uri {uri}")
    typer.echo(f"  runs:     {where}, then the runs table at #/experiments/<id>/runs")
    typer.echo(f"  lineage:  hwnas lineage {run_id}")
    typer.echo("  record:   git add dvc.lock results && git commit (and dvc push, with a remote)")


def headline() -> str | None:
    """The evaluation's result in one line, from the task's ``results/<task>/evaluate/metrics.json``."""
    import json

    try:
        m = json.loads((layout.EVALUATE / "metrics.json").read_text())
        line = (f"latency model -{100 * m['latency_reduction']:.1f}% "
                f"{m.get('latency_judge', 'simulated')} latency at "
                f"{m['score_delta']:+.2f} points")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if m.get("score_delta_se") is not None:
        line += f" (paired SE {m['score_delta_se']:.2f})"
    if "shown_equal" in m:
        from hwnas.evaluation.metrics import equal_word

        line += f", {equal_word(m['shown_equal'])} within {m['equal_margin']:g} points"
    if mm := m.get("memory_model"):
        line += (f"; memory model -{100 * mm['memory_reduction']:.1f}% memory at "
                 f"{mm['score_delta']:+.2f} points")
    return line


@app.command()
def schedule(
    cron: Annotated[str, typer.Option(help='Cron expression, e.g. "0 3 * * *" (03:00 daily).')],
    name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly-search",
    timezone: Annotated[str, typer.Option(help="IANA timezone of the cron expression.")] = "UTC",
):
    """Serve the pipeline as a scheduled Prefect deployment (needs a Prefect server).

    This process must keep running for the schedule to fire: it is the worker that runs the
    pipeline. Stopping it (Ctrl-C, SIGTERM) pauses the deployment on the server."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        fail("schedules need a Prefect server: start one with `prefect server start "
             "--host 127.0.0.1` and set PREFECT_API_URL=http://127.0.0.1:4200/api")
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        fail(f"--timezone: unknown timezone {timezone!r} (an IANA name such as Europe/Paris)")
    try:
        from prefect.client.schemas.schedules import CronSchedule

        CronSchedule(cron=cron, timezone=timezone)
    except ValueError:
        fail(f"--cron: {cron!r} is not a cron expression (five fields, e.g. \"0 3 * * *\")")
    from prefect.schedules import Cron

    from flows.pipeline import pipeline

    typer.echo(f"serving deployment hwnas-pipeline/{name} on cron {cron!r} ({timezone}); keep "
               "this process running for the schedule to fire (Ctrl-C stops it and pauses the "
               "deployment)")
    pipeline.serve(name=name, schedules=[Cron(cron, timezone=timezone)])


def tracking_store(must_exist: bool, writable: bool) -> str | None:
    """The MLflow store, checked before MLflow opens it (``hwnas.tracking.check_store``)."""
    from hwnas.errors import UserError
    from hwnas.tracking import check_store

    try:
        return check_store(must_exist, writable)
    except UserError as err:
        fail(str(err))


@app.command()
def lineage(run_id: Annotated[str, typer.Argument(help="An MLflow run id.")]):
    """Print where a run's model came from: data, estimator, supernet, search, parameters."""
    store = tracking_store(must_exist=True, writable=False)
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from hwnas.lineage import describe

    try:
        lines = describe(run_id)
    except MlflowException as err:
        from hwnas.tracking import unreachable

        fail(str(gone) if (gone := unreachable(err)) else f"run {run_id}: {err.message}")
    except (SQLAlchemyError, OSError) as err:  # a damaged or read-only store past the header
        fail(f"{store or 'the MLflow store'}: cannot read run {run_id}: {one_line(err, 160)}")
    for line in lines:
        typer.echo(line)
