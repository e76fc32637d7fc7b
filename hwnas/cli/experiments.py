"""``hwnas experiment``: experiments that measure the tool's claims."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from hardware.spec import SpecError
from hwnas import layout
from hwnas.cli.app import app, console
from hwnas.cli.inputs import fail
from hwnas.files import atomic_path, write_json
from hwnas.params import SCORE_MODES, MAX_SEED, MAX_WORKERS

RUNNERS = ("threads", "processes")
experiment_app = typer.Typer(no_args_is_help=True, help="Experiments that measure the tool's claims.")
app.add_typer(experiment_app, name="experiment")


def _search_context():
    from hwnas.estimator import EstimatorError
    from hwnas.params import ParamsError, load_params
    from hwnas.search.run import load_search_context

    if not layout.SUPERNET.exists():
        fail(f"{layout.SUPERNET}: no trained supernet (run `hwnas run` or `dvc repro train_supernet`)")
    try:
        return load_search_context(load_params())
    except (ParamsError, EstimatorError, SpecError) as err:
        fail(str(err))


@experiment_app.command("zeroshot")
def experiment_zeroshot(
    n: Annotated[int, typer.Option("-n", min=4, max=10_000, help="Networks to train and score.")] = 12,
    epochs: Annotated[int, typer.Option(min=1, max=1000, help="From-scratch epochs per network.")] = 2,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Sampling and training seed.")] = 0,
    seeds: Annotated[int, typer.Option(min=1, max=100, help="Training seeds per network "
                                       "(seed, seed+1, ...): the score is their mean.")] = 1,
    task: Annotated[str, typer.Option(help="The task whose supernet space and data are used.")
                    ] = layout.DEFAULT_TASK,
    runner: Annotated[str, typer.Option(help=" | ".join(RUNNERS))] = "threads",
    workers: Annotated[int, typer.Option(min=1, max=MAX_WORKERS, help="Parallel trainings.")] = 2,
    dask_address: Annotated[Optional[str], typer.Option(
        help="Train on a Dask cluster (scheduler address) instead.")] = None,
):
    """Kendall tau of NASWOT, synflow and grad_norm against trained score, beside #params.

    The networks are trained from scratch (multishot) over a Prefect task runner, on the
    task's val split, the mean over ``--seeds`` runs."""
    import statistics

    from flows.multishot import multishot
    from hwnas.experiments import proxy_taus, unique_samples
    from hwnas.params import ParamsError, load_params
    from hwnas.tasks import TASKS

    if runner not in RUNNERS:
        fail(f"--runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    if task not in TASKS:
        fail(f"--task: unknown task {task!r} (known: {', '.join(TASKS)})")
    layout.use_task(task)
    ctx = _search_context()
    try:
        params = load_params(task=task)
    except ParamsError as err:
        fail(str(err))
    archs = unique_samples(ctx.space, n, seed)
    train = {**params["train_supernet"]["train"], "epochs": epochs}
    for key in ("num_random", "distill"):
        train.pop(key, None)
    from hwnas.workers import ClusterError, cluster_address, connect

    if dask_address := dask_address or cluster_address():  # as every fan-out: HWNAS_CLUSTER
        try:
            connect(dask_address).close()
        except ClusterError as err:
            fail(str(err))
    typer.echo(f"training {len(archs)} {task} networks from scratch ({epochs} epochs, "
               f"{seeds} seed(s) each, {dask_address or f'{runner} x{workers}'})...")
    runs = [[r["score"] for r in multishot([a.encode() for a in archs],
                                           params["train_supernet"]["data"], train, seed + s,
                                           runner, workers, dask_address)]
            for s in range(seeds)]
    accs = [statistics.fmean(r) for r in zip(*runs)]
    taus, rows = proxy_taus(archs, accs, ctx.val[0][:64], ctx.val[1][:64], seed)
    for row, scores in zip(rows, zip(*runs)):
        row["scores"] = list(scores)
    from scipy.stats import kendalltau

    report = {"task": task, "networks": len(archs), "epochs": epochs, "seeds": seeds,
              "kendall_tau": taus, "rows": rows,
              # how well one seed's scores rank like another's: the ceiling for any proxy
              "seed_to_seed_tau": float(kendalltau(runs[0], runs[1]).statistic)
              if seeds > 1 else None}
    out = layout.EXPERIMENTS / ("zeroshot.json" if task == layout.DEFAULT_TASK
                                else f"zeroshot-{task}.json")
    write_json(out, report)
    table = Table(title=f"zero-shot proxies vs {task} score after {epochs} epochs "
                        f"({len(archs)} networks, {seeds} seed(s))")
    table.add_column("proxy")
    table.add_column("Kendall tau", justify="right")
    for name, tau in sorted(taus.items(), key=lambda kv: -kv[1]):
        table.add_row(name + (" (baseline)" if name == "params" else ""), f"{tau:+.3f}")
    console.print(table)
    if report["seed_to_seed_tau"] is not None:
        typer.echo(f"seed-to-seed Kendall tau of the trained scores: "
                   f"{report['seed_to_seed_tau']:+.3f}")
    typer.echo(f"written to {out}")


@experiment_app.command("curation")
def experiment_curation(
    seeds: Annotated[int, typer.Option(min=1, max=1000, help="Searches per space.")] = 5,
    candidates: Annotated[int, typer.Option(min=10, max=1_000_000, help="Evaluations per search.")] = 150,
    population: Annotated[int, typer.Option(min=4, max=100_000, help="NSGA-II population.")] = 25,
    score_mode: Annotated[str, typer.Option(
        "--score", help=" | ".join(SCORE_MODES))] = "supernet",
):
    """The same search on the curated and the uncurated space over several seeds:
    best feasible latency at baseline score against the number of evaluations."""
    from hwnas.experiments import curation_runs, curation_spaces, curation_table, plot_curation
    from hwnas.params import load_params
    from hwnas.search.objectives import make_objective_fn

    if score_mode not in SCORE_MODES:
        fail(f"--score must be one of {', '.join(SCORE_MODES)}, got {score_mode!r}")
    ctx = _search_context()
    spaces = curation_spaces(ctx.space, load_params()["train_supernet"]["space"])
    scorer = ctx.scorer(score_mode)
    try:
        objective_fn = make_objective_fn(scorer, ctx.estimator.estimate)
        base_score = objective_fn([ctx.baseline])[0]["score"]
        typer.echo(f"baseline score {base_score:.1f}; {seeds} seeds x {candidates} evaluations "
                   "per space...")
        curves = curation_runs(spaces, objective_fn, seeds=range(seeds), candidates=candidates,
                               population=population, min_score=base_score,
                               progress=lambda name, s: typer.echo(f"  {name} seed {s} done"))
    finally:
        if hasattr(scorer, "close"):
            scorer.close()
    table = curation_table(curves)
    with atomic_path(layout.EXPERIMENTS / "curation_curves.csv") as tmp:
        curves.to_csv(tmp, index=False)
    with atomic_path(layout.EXPERIMENTS / "curation.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(layout.EXPERIMENTS / "curation.png") as tmp:
        plot_curation(curves, tmp, f"curated vs uncurated on {ctx.spec.name} ({seeds} seeds)")
    out = Table(title="curated vs uncurated search")
    for col in table.columns:
        out.add_column(col, justify="left" if col == "space" else "right")
    for row in table.itertuples(index=False):
        out.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(out)
    typer.echo(f"written to {layout.EXPERIMENTS}/curation.csv, curation_curves.csv, curation.png")


@experiment_app.command("flops")
def experiment_flops(
    top: Annotated[int, typer.Option(min=1, max=1000, help="Misordered pairs to list.")] = 5,
):
    """Where FLOPs mislead on the accelerator: over every candidate of the last search, how
    well FLOPs and parameters rank simulated latency, the pairs FLOPs orders the wrong way
    by the most, the fused-IBN share per stage of the Pareto front, and each stage's block
    as IBN and as fused-IBN on the spec."""
    import pandas as pd

    from hwnas.experiments import flops_findings
    from hwnas.files import read_table

    ctx = _search_context()
    df = read_table(layout.CANDIDATES, {"arch": "text", "pareto": "any"},
                    "no search candidates (run `hwnas run`)")
    stats, pairs, stages = flops_findings(df, ctx.baseline, ctx.space, ctx.spec, top)
    out = layout.EXPERIMENTS / "flops"
    write_json(out / "metrics.json", {"hardware": ctx.spec.name, **stats})
    with atomic_path(out / "pairs.csv") as tmp:
        pairs.to_csv(tmp, index=False)
    with atomic_path(out / "stages.csv") as tmp:
        stages.to_csv(tmp, index=False)
    typer.echo(f"{stats['networks']} candidates on {ctx.spec.name}: Spearman with simulated "
               f"latency {stats['flops_latency_spearman']:.3f} (FLOPs), "
               f"{stats['params_latency_spearman']:.3f} (parameters); FLOPs orders "
               f"{100 * stats['misordered_pair_share']:.1f}% of pairs the wrong way")
    if len(pairs):
        p = pairs.iloc[0]
        typer.echo(f"worst pair: the network with {100 * (1 - 1 / p['flops_ratio']):.1f}% fewer "
                   f"FLOPs runs {p['latency_ratio']:.2f}x slower")
    table = Table(title=f"the baseline's stages on {ctx.spec.name}: block alone, simulated")
    for col in ("stage", "input", "IBN ms", "fused-IBN ms", "fused / IBN", "front fused share"):
        table.add_column(col, justify="right")
    for r in stages.itertuples(index=False):
        share = "n/a" if pd.isna(r.front_fused_share) else f"{r.front_fused_share:.2f}"
        table.add_row(str(r.stage), r.input, f"{r.ibn_ms:.4f}", f"{r.fused_ibn_ms:.4f}",
                      f"{r.fused_over_ibn:.2f}", share)
    console.print(table)
    typer.echo(f"written to {out}/metrics.json, pairs.csv, stages.csv")
