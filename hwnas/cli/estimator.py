"""Commands on the latency estimator: estimate, microbench, train-estimator."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from hardware.spec import DEFAULT_SPEC, SpecError, load_spec
from hwnas import layout
from hwnas.arch import ArchError
from hwnas.cli.app import app, console
from hwnas.cli.inputs import (HardwareOpt, InputError, JsonOpt, check_number, echo_json, fail,
                              load_estimator, read_archs, warn_out_of_range)
from hwnas.files import atomic_dir, atomic_path
from hwnas.params import MAX_SAMPLES


@app.command()
def estimate(
    hardware: HardwareOpt = DEFAULT_SPEC,
    arch: Annotated[str, typer.Option(
        help="JSON file, inline JSON, architecture string, reference name, "
             "or '-' for one per stdin line.")] = ...,
    estimator: Annotated[Optional[Path], typer.Option(
        help="Estimator directory (default: models/estimator/<spec name>, or "
             "models/estimator/onnxruntime with --hardware onnxruntime).")] = None,
    as_json: JsonOpt = False,
    per_kernel: Annotated[bool, typer.Option(help="Add per-kernel estimates.")] = False,
):
    """Estimate latency (LightGBM models) and memory (graph) without the simulator.

    Prints the keys ``simulate`` prints (name, latency_ms, params_bytes,
    peak_activation_bytes...) plus ``out_of_range``: kernels outside the trained ranges."""
    from hwnas.estimator import EstimatorError

    try:
        est = load_estimator(hardware, estimator)
        archs = read_archs(arch)
    except (ArchError, SpecError, InputError, EstimatorError) as err:
        fail(str(err))
    rows = est.estimate(archs, per_kernel=per_kernel)
    warn_out_of_range(rows)
    if as_json:
        echo_json(*rows)
        return
    table = Table(title=f"estimated for {est.manifest['hardware']} ({est.path})")
    for col in ("network", "latency ms", "MMACs", "params KiB", "peak act KiB", "out of range"):
        table.add_column(col, justify="left" if col in ("network", "out of range") else "right")
    for r in rows:
        lat = "n/a" if r["latency_ms"] is None else f"{r['latency_ms']:.4f}"
        oor = "; ".join(r["out_of_range"][:2]) + (" ..." if len(r["out_of_range"]) > 2 else "")
        table.add_row(r["name"], lat, f"{r['macs'] / 1e6:.1f}", f"{r['params_bytes'] / 1024:.0f}",
                      f"{r['peak_activation_bytes'] / 1024:.0f}", oor)
    console.print(table)


@app.command()
def microbench(
    backend: Annotated[Optional[str], typer.Option(
        help="sim (the simulator, noise on) or onnxruntime (this CPU, through ONNX Runtime); "
             "default: the one the spec is measured by, else sim.")] = None,
    hardware: Annotated[Optional[str], typer.Option(
        "--hardware", "-H", help="Spec name or YAML (default: params.yaml's base.hardware).")] = None,
    samples: Annotated[Optional[int], typer.Option(min=1, max=MAX_SAMPLES, help="At most this many units.")] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="Seconds before sampling stops.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Parquet table to write (with --plan: the plan's folder).")] = None,
    params: Annotated[Path, typer.Option(help="params.yaml with a microbench section.")] = Path("params.yaml"),
    plan: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_SAMPLES,
        help="Measure nothing: write N units for a device team to time on its own device "
             "(ONNX files, plan.csv, timings_template.csv) to --out.")] = None,
):
    """Run the microbenchmarks (defaults from params.yaml's microbench section), or write
    a plan of units for another device (--plan)."""
    from rich.progress import Progress

    from hwnas.estimator.microbench import (MicrobenchConfig, MicrobenchError,
                                            resolve_backend, run_microbench)
    from hwnas.estimator.train import config_from
    from hwnas.params import ParamsError, backend_section, load_params

    try:
        all_params = load_params(params)
        spec = load_spec(hardware or all_params["base"]["hardware"])
        backend = resolve_backend(spec, backend)
        # a plan is for a measured device: the measured targets' settings (whole networks too)
        section = "onnxruntime" if plan is not None else backend
        p = {**backend_section(all_params, "microbench", section), "backend": section}
        if hardware is not None:
            p["hardware"] = hardware
        if samples is not None:
            p["samples"] = samples
        if time_budget is not None:
            p["time_budget_s"] = check_number(time_budget, "--time-budget", 1e-3, 1e6)
        if plan is None and out is not None and out.suffix not in ("", ".parquet"):
            raise InputError(f"--out: {out}: the table is written as Parquet; name it *.parquet")
        cfg = config_from(MicrobenchConfig, p)
        if plan is not None and out is None:
            raise InputError("--plan needs --out DIR, the folder to write the plan to")
        if plan is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"--out: {out}: not an empty folder; a plan is written to a new one")
    except (SpecError, InputError, ParamsError, MicrobenchError) as err:
        fail(str(err))
    if plan is not None:
        write_planned(cfg, spec, plan, out)
        return
    path = out or layout.microbench_table(layout.target_name(backend, spec.name))
    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"microbench {backend}", total=cfg.samples)
        table = run_microbench(cfg, spec, progress=lambda n: bar.advance(task, n))
    with atomic_path(path) as tmp:  # whole or not at all; a failed write names the path
        table.to_parquet(tmp, index=False)
    typer.echo(f"{table['sample'].nunique()} units, {len(table)} rows -> {path}")


@app.command("train-estimator")
def train_estimator(
    table: Annotated[Path, typer.Option(help="Microbenchmark parquet table.")],
    hardware: HardwareOpt = DEFAULT_SPEC,
    out: Annotated[Optional[Path], typer.Option(help="Estimator directory to write.")] = None,
    n_estimators: Annotated[int, typer.Option(min=1, max=100_000, help="Boosting rounds per kind.")] = 200,
):
    """Fit the per-kind LightGBM models on a microbenchmark table and save them."""
    from hwnas.estimator.microbench import MicrobenchError, read_table, resolve_backend
    from hwnas.estimator.model import LightGBMConfig, file_hash
    from hwnas.estimator.train import train

    try:
        spec = load_spec(hardware)
        data = read_table(table)
        backend = resolve_backend(spec, str(data["backend"].iloc[0])
                                  if "backend" in data.columns else "sim",
                                  f"{table}: measured on")
    except (SpecError, MicrobenchError) as err:
        fail(str(err))
    if backend == "sim":  # a table measured on another spec would train a wrong estimator
        from hwnas.estimator.decompose import spec_fields

        for field, value in spec_fields(spec).items():
            if field in data.columns and not (data[field] == value).all():
                fail(f"{table}: measured with {field}={data[field].iloc[0]:g}, but "
                     f"{spec.name} has {value:g}; pass the matching --hardware")
    path = out or layout.estimator_dir(layout.target_name(backend, spec.name))
    with atomic_dir(path) as tmp:  # the old estimator stays whole until the new one is
        manifest = train(data, spec, backend, LightGBMConfig(n_estimators=n_estimators), tmp,
                         file_hash(table))
    typer.echo(f"{len(manifest['kinds'])} models ({', '.join(manifest['kinds'])}) -> {path}")


def write_planned(cfg, spec, n: int, out: Path) -> None:
    from hwnas.estimator.microbench import first_round
    from hwnas.estimator.plan import write_plan

    samples, networks = first_round(cfg, spec, n)
    with atomic_dir(out) as tmp, console.status(f"exporting {n} units and "
                                                f"{len(networks)} networks to ONNX"):
        info = write_plan(samples, networks, tmp, spec.name)
    typer.echo(f"plan {info['plan']}: {info['units']} units and {info['networks']} networks -> "
               f"{out} (time them, fill {out}/timings_template.csv, then "
               f"`hwnas import-timings {out}/timings_template.csv --plan {out}`)")


@app.command("import-timings")
def import_timings(
    timings: Annotated[Path, typer.Argument(help="CSV of timings (plan, unit_id, input_shape, "
                                                 "latency_ms), from a plan's template.")],
    plan: Annotated[Path, typer.Option(help="The plan folder the units came from.")],
    out: Annotated[Optional[Path], typer.Option(
        help="Estimator directory to write (default: models/estimator/imported).")] = None,
    n_estimators: Annotated[int, typer.Option(min=1, max=100_000, help="Boosting rounds per kind.")] = 200,
):
    """Train an estimator from a device team's own timings of a plan's units."""
    from hwnas.estimator.model import MIN_ROWS, LightGBMConfig, file_hash
    from hwnas.estimator.plan import BACKEND, PlanError, read_timings
    from hwnas.estimator.train import train

    try:
        table = read_timings(timings, plan)
    except PlanError as err:
        fail(str(err))
    path = out or layout.estimator_dir(BACKEND)
    try:
        with atomic_dir(path) as tmp:  # the old estimator stays whole until the new one is
            manifest = train(table, None, BACKEND, LightGBMConfig(n_estimators=n_estimators),
                             tmp, file_hash(timings))
            if not manifest["kinds"]:
                raise PlanError(f"{timings}: no kind of unit has {MIN_ROWS} timed units; nothing "
                                f"trained (time every unit of the plan)")
    except PlanError as err:
        fail(str(err))
    cal = manifest["calibration"]
    typer.echo(f"{table['sample'].nunique()} timed units; {len(manifest['kinds'])} models "
               f"({', '.join(manifest['kinds'])})"
               + (f", calibrated on {cal['networks']} networks" if cal else "") + f" -> {path}")
