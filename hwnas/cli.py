"""The ``hwnas`` command line. Bad input prints one line on stderr and exits 2,
having written nothing to stdout."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from hardware.graph import Op
from hardware.spec import DEFAULT_SPEC, OP_KINDS, SpecError, available_specs, load_spec
from hwnas.arch import ArchError, ArchSpec, from_json, parse_arch
from hwnas.registry import REFERENCES, reference

def simulate_op(*args, **kwargs):
    """Lazy: ``hwnas estimate`` must run where ``hardware.simulator`` cannot be imported."""
    from hardware.simulator import simulate_op as run

    return run(*args, **kwargs)


def simulate_arch(*args, **kwargs):
    from hwnas.simulation import simulate_arch as run

    return run(*args, **kwargs)


app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Hardware-aware neural architecture search for neural accelerators.")
console = Console(width=None if sys.stdout.isatty() else 120)

HardwareOpt = Annotated[str, typer.Option("--hardware", "-H",
                        help="Spec YAML path or bundled spec name "
                             f"({', '.join(available_specs())}).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (one line per network).")]


class InputError(ValueError):
    """Bad user input: reported on one line, exit status 2."""


def fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def read_arch(text: str) -> ArchSpec:
    """ARCH as a JSON file, inline JSON, a compact string or a reference name."""
    text = text.strip()
    if text in REFERENCES:
        return reference(text)
    if text.startswith("{") or re.match(r"^([^:\s]+:)?i\d+x\d+x\d+-", text):
        return parse_arch(text)
    path = Path(text)
    try:
        is_file = path.is_file()
    except OSError:  # e.g. a name too long to be a file
        is_file = False
    if is_file:
        try:
            return from_json(path.read_text())
        except ArchError as err:
            raise ArchError(f"{path}: {err}") from None
    raise InputError(f"architecture {text!r} is not a file, JSON object, architecture string "
                     f"or reference name ({', '.join(REFERENCES)})")


def read_archs(arch: str) -> list[ArchSpec]:
    """One ARCH, or with ``-`` one JSON/string per stdin line. All are parsed before
    any is run so that a bad line stops the batch before output starts."""
    if arch != "-":
        return [read_arch(arch)]
    archs = []
    for n, line in enumerate(sys.stdin, 1):
        if line.strip():
            try:
                archs.append(read_arch(line))
            except (ArchError, InputError) as err:
                raise InputError(f"stdin line {n}: {err}") from None
    return archs


def parse_op(text: str) -> Op:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"--op: malformed JSON: {err}") from None
    if not isinstance(d, dict):
        raise InputError("--op: must be a JSON object")
    if d.get("op") not in OP_KINDS:
        raise InputError(f"--op: field 'op' must be one of {', '.join(OP_KINDS)}")
    allowed = {"op", "height", "width", "in", "out", "kernel", "stride"}
    if unknown := sorted(set(d) - allowed):
        raise InputError(f"--op: unknown field '{unknown[0]}'")
    kind = d["op"]
    h, w = (1, 1) if kind == "fc" else (d.get("height"), d.get("width"))
    cin = d.get("in")
    cout = cin if kind in ("depthwise", "add", "pool") else d.get("out")
    vals = {"height": h, "width": w, "in": cin, "out": cout,
            "kernel": d.get("kernel", 1), "stride": d.get("stride", 1)}
    for key, v in vals.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"--op: field '{key}' must be a positive integer, got {v!r}")
    if vals["stride"] not in (1, 2) or vals["kernel"] % 2 == 0:
        raise InputError("--op: 'stride' must be 1 or 2 and 'kernel' odd")
    if kind == "depthwise" and d.get("out", cin) != cin:
        raise InputError("--op: a depthwise op has out == in")
    inputs = (0, 1) if kind == "add" else (0,)
    return Op(kind, kind, h, w, cin, cout, vals["kernel"], vals["stride"], inputs=inputs,
              output=len(inputs))


def _table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    cols = [("name", "network", str), ("latency_ms", "latency ms", "{:.4f}".format),
            ("macs", "MMACs", lambda v: f"{v / 1e6:.1f}"),
            ("params", "params (k)", lambda v: f"{v / 1e3:.1f}"),
            ("peak_activation_bytes", "peak act KiB", lambda v: f"{v / 1024:.0f}"),
            ("energy_mj", "energy mJ", "{:.3f}".format),
            ("utilization", "MAC util", "{:.0%}".format)]
    table.add_column("network", no_wrap=True, min_width=22)
    for _, head, _ in cols[1:]:
        table.add_column(head, justify="right")
    for r in rows:
        table.add_row(*(fmt(r[key]) for key, _, fmt in cols))
    return table


@app.command()
def simulate(
    hardware: HardwareOpt = DEFAULT_SPEC,
    arch: Annotated[Optional[str], typer.Option(
        help="JSON file, inline JSON, architecture string, reference name, "
             "or '-' for one per stdin line.")] = None,
    op: Annotated[Optional[str], typer.Option(
        help='One kernel as JSON, e.g. {"op": "conv", "height": 56, "width": 56, "in": 64, '
             '"out": 64, "kernel": 3, "stride": 1}.')] = None,
    as_json: JsonOpt = False,
    noise: Annotated[float, typer.Option(help="Relative measurement noise (0 = exact).")] = 0.0,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the measurement noise.")] = 0,
):
    """Simulate networks (--arch) or one kernel (--op) on an accelerator spec."""
    try:
        if (arch is None) == (op is None):
            raise InputError("give exactly one of --arch or --op")
        if noise < 0:
            raise InputError("--noise must be >= 0")
        spec = load_spec(hardware)
        if op is not None:
            r = simulate_op(parse_op(op), spec, noise, seed).to_dict()
            if as_json:
                typer.echo(json.dumps(r))
            else:
                for k, v in r.items():
                    typer.echo(f"{k:>15}: {v}")
            return
        archs = read_archs(arch)
    except (ArchError, SpecError, InputError) as err:
        fail(str(err))
    rows = [simulate_arch(a, spec, noise, seed) for a in archs]
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))
    else:
        console.print(_table(rows, f"simulated on {spec.name}"))


@app.command()
def references(hardware: HardwareOpt = DEFAULT_SPEC, as_json: JsonOpt = False):
    """Simulate every reference architecture on a spec and print a table."""
    try:
        spec = load_spec(hardware)
    except SpecError as err:
        fail(str(err))
    rows = [simulate_arch(reference(n), spec, per_kernel=False) for n in REFERENCES]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    console.print(_table(rows, f"reference architectures on {spec.name} "
                               f"({spec.mac_array.rows}x{spec.mac_array.cols} MAC array, "
                               f"{spec.clock_mhz:g} MHz)"))


@app.command()
def specs():
    """List the bundled hardware specs."""
    table = Table(title="bundled hardware specs")
    for col in ("name", "MAC array", "clock MHz", "vector lanes", "SRAM KiB", "DRAM GB/s",
                "fusion"):
        table.add_column(col)
    for name in available_specs():
        s = load_spec(name)
        table.add_row(s.name, f"{s.mac_array.rows}x{s.mac_array.cols}", f"{s.clock_mhz:g}",
                      str(s.vector_unit.lanes), f"{s.sram_kib:g}", f"{s.dram_bandwidth_gb_s:g}",
                      ", ".join("+".join(r) for r in s.fusion))
    console.print(table)


@app.command()
def sample(
    hardware: HardwareOpt = DEFAULT_SPEC,
    n: Annotated[int, typer.Option("-n", min=1, help="How many architectures.")] = 5,
    seed: Annotated[int, typer.Option(min=0, help="Sampling seed.")] = 0,
    uncurated: Annotated[bool, typer.Option(help="Sample the uncurated space (steps of 8).")] = False,
):
    """Sample architecture strings from the curated (or uncurated) search space."""
    from hwnas.space import curated_space, uncurated_space

    try:
        spec = load_spec(hardware)
    except SpecError as err:
        fail(str(err))
    space = uncurated_space() if uncurated else curated_space(spec)
    rng = np.random.default_rng(seed)
    for _ in range(n):
        typer.echo(space.sample(rng).encode())


def load_estimator(hardware: str, estimator: Path | None):
    """The estimator for a spec name (default dir models/estimator/<spec name>), or
    the host-CPU one for ``cpu``."""
    from hwnas.estimator import Estimator

    if hardware == "cpu":
        spec, default_dir = load_spec(DEFAULT_SPEC), Path("models/estimator/cpu")
    else:
        spec = load_spec(hardware)
        default_dir = Path("models/estimator") / spec.name
    return Estimator.load(estimator or default_dir, spec)


@app.command()
def estimate(
    hardware: HardwareOpt = DEFAULT_SPEC,
    arch: Annotated[str, typer.Option(
        help="JSON file, inline JSON, architecture string, reference name, "
             "or '-' for one per stdin line.")] = ...,
    estimator: Annotated[Optional[Path], typer.Option(
        help="Estimator directory (default: models/estimator/<spec name>, or "
             "models/estimator/cpu with --hardware cpu).")] = None,
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
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))
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
    backend: Annotated[str, typer.Option(help="sim (the simulator, noise on) or cpu (this CPU).")] = "sim",
    hardware: Annotated[Optional[str], typer.Option(
        "--hardware", "-H", help="Spec name or YAML (default: params.yaml's base.hardware).")] = None,
    samples: Annotated[Optional[int], typer.Option(min=1, help="At most this many units.")] = None,
    time_budget: Annotated[Optional[float], typer.Option(help="Seconds before sampling stops.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Parquet table to write.")] = None,
    params: Annotated[Path, typer.Option(help="params.yaml with a microbench section.")] = Path("params.yaml"),
):
    """Run the microbenchmarks (defaults from params.yaml's microbench section)."""
    from rich.progress import Progress

    from hwnas.estimator.microbench import MicrobenchConfig, MicrobenchError, run_microbench
    from hwnas.estimator.train import config_from
    from hwnas.params import ParamsError, load_params
    from stages.microbench import params_for, table_path

    try:
        if backend not in ("sim", "cpu"):
            raise InputError(f"--backend must be sim or cpu, got {backend!r}")
        p = params_for(backend, load_params(params))
        if hardware is not None:
            p["hardware"] = hardware
        if samples is not None:
            p["samples"] = samples
        if time_budget is not None:
            p["time_budget_s"] = time_budget
        spec = load_spec(p["hardware"])
        cfg = config_from(MicrobenchConfig, p)
    except (SpecError, InputError, ParamsError, MicrobenchError) as err:
        fail(str(err))
    path = out or table_path(backend, spec.name)
    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(f"microbench {backend}", total=cfg.samples)
        table = run_microbench(cfg, spec, progress=lambda n: bar.advance(task, n))
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    typer.echo(f"{table['sample'].nunique()} units, {len(table)} rows -> {path}")


@app.command("train-estimator")
def train_estimator(
    table: Annotated[Path, typer.Option(help="Microbenchmark parquet table.")],
    hardware: HardwareOpt = DEFAULT_SPEC,
    out: Annotated[Optional[Path], typer.Option(help="Estimator directory to write.")] = None,
    n_estimators: Annotated[int, typer.Option(min=1, help="Boosting rounds per kind.")] = 200,
):
    """Fit the per-kind LightGBM models on a microbenchmark table and save them."""
    from hwnas.estimator.microbench import MicrobenchError, read_table
    from hwnas.estimator.model import LightGBMConfig, file_hash
    from hwnas.estimator.train import train

    try:
        spec = load_spec(hardware)
        data = read_table(table)
    except (SpecError, MicrobenchError) as err:
        fail(str(err))
    backend = str(data["backend"].iloc[0]) if "backend" in data.columns else "sim"
    if backend == "sim":  # a table measured on another spec would train a wrong estimator
        from hwnas.estimator.decompose import spec_fields

        for field, value in spec_fields(spec).items():
            if field in data.columns and not (data[field] == value).all():
                fail(f"{table}: measured with {field}={data[field].iloc[0]:g}, but "
                     f"{spec.name} has {value:g}; pass the matching --hardware")
    path = out or Path("models/estimator") / (spec.name if backend == "sim" else "cpu")
    manifest = train(data, spec, backend, LightGBMConfig(n_estimators=n_estimators), path,
                     file_hash(table))
    typer.echo(f"{len(manifest['kinds'])} models ({', '.join(manifest['kinds'])}) -> {path}")


@app.command()
def run(
    stages: Annotated[Optional[list[str]], typer.Option(
        "--stage", help="Run only these stages (repeatable); default: the whole pipeline.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for a pipeline already running here.")] = False,
):
    """Run the pipeline (DVC stages chained by a Prefect flow, tracked in MLflow)."""
    from hwnas.params import ParamsError, load_params, validate_params

    try:
        validate_params(load_params())
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
    typer.echo("  report:   results/evaluate/report.md (pareto.png beside it)")
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


@app.command()
def expert(
    hardware: HardwareOpt = DEFAULT_SPEC,
    arch: Annotated[str, typer.Option(help="The baseline: JSON file, inline JSON, "
                                           "architecture string or reference name.")] = ...,
    rules: Annotated[Optional[Path], typer.Option(
        help="YAML/JSON list of rules, e.g. [{fuse_ibn: {}}, {align_channels: {multiple: 32}}]. "
             "Default: every rule once.")] = None,
    learn_from: Annotated[Optional[Path], typer.Option(
        help="A finished search's pareto.json: apply the rules learned from it instead.")] = None,
    estimator: Annotated[Optional[Path], typer.Option(help="Estimator directory.")] = None,
    out: Annotated[Path, typer.Option(help="Where to write the resulting architecture JSON.")]
        = Path("results/expert/arch.json"),
    keep_all: Annotated[bool, typer.Option(help="Keep rules that do not pay too.")] = False,
    as_json: JsonOpt = False,
):
    """Apply expert rules to a baseline; print each rule's estimated latency and memory gain."""
    import yaml

    from hwnas.estimator import EstimatorError
    from hwnas.expert import apply_rules, learn_rules, parse_rules

    try:
        est = load_estimator(hardware, estimator)
        baseline = read_arch(arch)
        parallelism = est.spec.parallelism if est.spec else load_spec(DEFAULT_SPEC).parallelism
        if learn_from is not None:
            pareto = json.loads(learn_from.read_text())
            entries = pareto.get("pareto") if isinstance(pareto, dict) else None
            if not isinstance(entries, list) or not all(
                    isinstance(e, dict) and isinstance(e.get("arch"), str) for e in entries):
                raise InputError(f"{learn_from}: expected a search's pareto.json "
                                 '({"pareto": [{"arch": ...}, ...]})')
            chosen = learn_rules([parse_arch(e["arch"]) for e in entries], parallelism)
        else:
            items = (yaml.safe_load(rules.read_text()) if rules else
                     [{"fuse_ibn": {}}, {"replace_depthwise": {}},
                      {"align_channels": {"multiple": parallelism}},
                      {"even_channels": {}},
                      {"pin_block_type": {"type": "fused_ibn", "min_scale": 0.25}}])
            chosen = parse_rules(items.get("rules", items) if isinstance(items, dict) else items)
    except (ArchError, SpecError, InputError, EstimatorError, ValueError, OSError) as err:
        fail(str(err))

    def cost(archs):
        records = est.estimate(list(archs))
        missing = [r["out_of_range"] for r in records if r["latency_ms"] is None]
        if missing:
            fail(f"the estimator cannot cost {archs[0].name or 'a network'}: {missing[0][0]}")
        return [(r["latency_ms"], r["memory_bytes"]) for r in records]

    results = apply_rules(baseline, chosen, cost, only_gains=not keep_all)
    final = results[-1].arch if results else baseline
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(final.to_json(), indent=2) + "\n")
    (base_lat, base_mem), = cost([baseline])
    if as_json:
        typer.echo(json.dumps({"baseline": {"latency_ms": base_lat, "memory_bytes": base_mem},
                               "rules": [{"rule": r.rule, "latency_ms": r.latency_ms,
                                          "memory_bytes": r.memory_bytes,
                                          "latency_gain": r.latency_gain,
                                          "memory_gain": r.memory_gain, "kept": r.kept}
                                         for r in results],
                               "arch": final.encode(), "out": str(out)}))
        return
    table = Table(title=f"expert rules on {baseline.name or 'baseline'} "
                        f"(estimated for {est.manifest['hardware']})")
    for col in ("rule", "latency ms", "memory KiB", "latency gain", "memory gain", "kept"):
        table.add_column(col, justify="left" if col == "rule" else "right")
    table.add_row("baseline", f"{base_lat:.4f}", f"{base_mem / 1024:.0f}", "", "", "")
    for r in results:
        (key, args), = r.rule.items()
        label = key + (" " + ", ".join(f"{k}={v}" for k, v in args.items()) if args else "")
        table.add_row(label, f"{r.latency_ms:.4f}", f"{r.memory_bytes / 1024:.0f}",
                      f"{r.latency_gain:+.1%}", f"{r.memory_gain:+.1%}", "yes" if r.kept else "no")
    console.print(table)
    (lat, mem), = cost([final])
    typer.echo(f"estimated: latency {1 - lat / base_lat:.1%} lower, memory {1 - mem / base_mem:.1%}"
               f" lower than the baseline; architecture written to {out}")


experiment_app = typer.Typer(no_args_is_help=True, help="Experiments that measure the tool's claims.")
app.add_typer(experiment_app, name="experiment")
EXPERIMENTS = Path("results/experiments")


def _search_context():
    from hwnas.estimator import EstimatorError
    from hwnas.params import ParamsError, load_params
    from stages.search import SUPERNET, load_context

    if not SUPERNET.exists():
        fail(f"{SUPERNET}: no trained supernet (run `hwnas run` or `dvc repro train_supernet`)")
    try:
        return load_context(load_params())
    except (ParamsError, EstimatorError, SpecError) as err:
        fail(str(err))


@experiment_app.command("zeroshot")
def experiment_zeroshot(
    n: Annotated[int, typer.Option("-n", min=4, help="Networks to train and score.")] = 12,
    epochs: Annotated[int, typer.Option(min=1, help="From-scratch epochs per network.")] = 2,
    seed: Annotated[int, typer.Option(help="Sampling and training seed.")] = 0,
    runner: Annotated[str, typer.Option(help="threads | processes")] = "threads",
    workers: Annotated[int, typer.Option(min=1, help="Parallel trainings.")] = 2,
    dask_address: Annotated[Optional[str], typer.Option(
        help="Train on a Dask cluster (scheduler address) instead.")] = None,
):
    """Kendall tau of NASWOT, synflow and grad_norm against trained accuracy, beside #params.

    The networks are trained from scratch (multishot) over a Prefect task runner."""
    from flows.multishot import multishot
    from hwnas.experiments import proxy_taus, unique_samples
    from hwnas.params import load_params

    ctx = _search_context()
    params = load_params()
    archs = unique_samples(ctx.space, n, seed)
    train = {**params["train_supernet"]["train"], "epochs": epochs}
    for key in ("num_random", "distill"):
        train.pop(key, None)
    typer.echo(f"training {len(archs)} networks from scratch ({epochs} epochs each, "
               f"{dask_address or runner} x{workers})...")
    trained = multishot([a.encode() for a in archs], params["train_supernet"]["data"], train,
                        seed, runner, workers, dask_address)
    accs = [r["accuracy"] for r in trained]
    taus, rows = proxy_taus(archs, accs, ctx.val[0][:64], ctx.val[1][:64], seed)
    EXPERIMENTS.mkdir(parents=True, exist_ok=True)
    report = {"networks": len(archs), "epochs": epochs, "kendall_tau": taus, "rows": rows}
    (EXPERIMENTS / "zeroshot.json").write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"zero-shot proxies vs accuracy after {epochs} epochs ({len(archs)} networks)")
    table.add_column("proxy")
    table.add_column("Kendall tau", justify="right")
    for name, tau in sorted(taus.items(), key=lambda kv: -kv[1]):
        table.add_row(name + (" (baseline)" if name == "params" else ""), f"{tau:+.3f}")
    console.print(table)
    typer.echo(f"written to {EXPERIMENTS / 'zeroshot.json'}")


@experiment_app.command("curation")
def experiment_curation(
    seeds: Annotated[int, typer.Option(min=1, help="Searches per space.")] = 5,
    candidates: Annotated[int, typer.Option(min=10, help="Evaluations per search.")] = 150,
    population: Annotated[int, typer.Option(min=4, help="NSGA-II population.")] = 25,
    accuracy_mode: Annotated[str, typer.Option(
        "--accuracy", help="supernet | naswot | synflow | grad_norm")] = "supernet",
):
    """The same search on the curated and the uncurated space over several seeds:
    best feasible latency at baseline accuracy against the number of evaluations."""
    from hwnas.experiments import curation_runs, curation_table, plot_curation
    from hwnas.params import load_params
    from hwnas.search.objectives import make_evaluator
    from hwnas.space import SpaceConfig, uncurated_space

    ctx = _search_context()
    params = load_params()
    sp = params["train_supernet"]["space"]
    cfg = SpaceConfig(resolution=ctx.space.input.height, in_channels=ctx.space.input.channels,
                      classes=ctx.space.head.classes,
                      **{k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                         if isinstance(v, list) else v for k, v in sp.items()})
    spaces = {"curated": ctx.space, "uncurated": uncurated_space(cfg)}
    scorer = ctx.scorer(accuracy_mode)
    try:
        evaluate = make_evaluator(scorer, ctx.estimator.estimate)
        base_acc = evaluate([ctx.baseline])[0]["accuracy"]
        typer.echo(f"baseline accuracy {base_acc:.1f}; {seeds} seeds x {candidates} evaluations "
                   "per space...")
        curves = curation_runs(spaces, evaluate, seeds=range(seeds), candidates=candidates,
                               population=population, min_accuracy=base_acc,
                               progress=lambda name, s: typer.echo(f"  {name} seed {s} done"))
    finally:
        if hasattr(scorer, "close"):
            scorer.close()
    table = curation_table(curves)
    EXPERIMENTS.mkdir(parents=True, exist_ok=True)
    curves.to_csv(EXPERIMENTS / "curation_curves.csv", index=False)
    table.to_csv(EXPERIMENTS / "curation.csv", index=False)
    plot_curation(curves, EXPERIMENTS / "curation.png",
                  f"curated vs uncurated on {ctx.spec.name} ({seeds} seeds)")
    out = Table(title="curated vs uncurated search")
    for col in table.columns:
        out.add_column(col, justify="left" if col == "space" else "right")
    for row in table.itertuples(index=False):
        out.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(out)
    typer.echo(f"written to {EXPERIMENTS}/curation.csv, curation_curves.csv, curation.png")


if __name__ == "__main__":
    app()
