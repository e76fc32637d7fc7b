"""Commands on the pipeline: run, schedule, lineage."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from hwnas import layout
from hwnas.cli.app import app
from hwnas.cli.inputs import fail


@app.command()
def run(
    stages: Annotated[Optional[list[str]], typer.Option(
        "--stage", help="Run only these stages (repeatable); default: the whole pipeline.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for a pipeline already running here.")] = False,
):
    """Run the pipeline (DVC stages chained by a Prefect flow, tracked in MLflow)."""
    from hwnas.params import ParamsError, load_params

    try:
        load_params()  # the schema refuses a bad key before Prefect or any stage starts
    except ParamsError as err:
        fail(str(err))
    from flows.pipeline import PipelineBusy, pipeline

    try:
        run_id = pipeline(stages=stages, wait=wait)
    except (PipelineBusy, ValueError) as err:
        fail(str(err))
    except RuntimeError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    typer.echo(f"pipeline finished: MLflow run {run_id}")
    typer.echo(f"  report:   {layout.EVALUATE / 'report.md'} (pareto.png beside it)")
    typer.echo("  metrics:  dvc metrics show")
    typer.echo("  runs:     mlflow ui --backend-store-uri sqlite:///mlflow.db")
    typer.echo(f"  lineage:  hwnas lineage {run_id}")


@app.command()
def schedule(
    cron: Annotated[str, typer.Option(help='Cron expression, e.g. "0 3 * * *" (03:00 daily).')],
    name: Annotated[str, typer.Option(help="Deployment name.")] = "nightly-search",
):
    """Serve the pipeline as a scheduled Prefect deployment (needs a Prefect server)."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        fail("schedules need a Prefect server: start one with `prefect server start "
             "--host 127.0.0.1` and set PREFECT_API_URL=http://127.0.0.1:4200/api")
    try:
        from prefect.client.schemas.schedules import CronSchedule

        CronSchedule(cron=cron)
    except ValueError as err:
        fail(f"--cron: {err}")
    from flows.pipeline import pipeline

    typer.echo(f"serving deployment hwnas-pipeline/{name} on cron {cron!r} (Ctrl-C stops)")
    pipeline.serve(name=name, cron=cron)


@app.command()
def lineage(run_id: Annotated[str, typer.Argument(help="An MLflow run id.")]):
    """Print where a run's model came from: data, estimator, supernet, search, parameters."""
    from mlflow.exceptions import MlflowException

    from hwnas.lineage import describe

    try:
        lines = describe(run_id)
    except MlflowException as err:
        fail(f"run {run_id}: {err.message}")
    for line in lines:
        typer.echo(line)
