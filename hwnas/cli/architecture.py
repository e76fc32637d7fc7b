"""Commands on architectures and specs: simulate, references, specs, sample."""
from __future__ import annotations

from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from hardware.spec import DEFAULT_SPEC, SpecError, available_specs, load_spec
from hwnas.arch import ArchError
from hwnas.cli.app import app, console
from hwnas.cli.inputs import (HardwareOpt, InputError, JsonOpt, check_number, echo_json, fail,
                              one_line, parse_op, read_archs)
from hwnas.params import MAX_SEED
from hwnas.registry import REFERENCES, reference


def simulate_op(*args, **kwargs):
    """Lazy: ``hwnas estimate`` must run where ``hardware.simulator`` cannot be imported."""
    from hardware.simulator import simulate_op as run

    return run(*args, **kwargs)


def simulate_arch(*args, **kwargs):
    from hwnas.simulation import simulate_arch as run

    return run(*args, **kwargs)


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
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the measurement noise.")] = 0,
):
    """Simulate networks (--arch) or one kernel (--op) on an accelerator spec."""
    try:
        if (arch is None) == (op is None):
            raise InputError("give exactly one of --arch or --op")
        check_number(noise, "--noise", 0, 1, high_open=True)
        spec = simulated_spec(hardware)
        if op is not None:
            r = simulate_op(parse_op(op), spec, noise, seed).to_dict()
            if as_json:
                echo_json(r)
            else:
                for k, v in r.items():
                    typer.echo(f"{k:>15}: {v}")
            return
        archs = read_archs(arch)
    except (ArchError, SpecError, InputError) as err:
        fail(str(err))
    rows = [simulate_arch(a, spec, noise, seed) for a in archs]
    if as_json:
        echo_json(*rows)
    else:
        console.print(_table(rows, f"simulated on {spec.name}"))


def simulated_spec(hardware: str):
    """The spec to simulate on; a measured target's spec only sketches its processor."""
    spec = load_spec(hardware)
    if spec.measured_by:
        raise InputError(f"--hardware {spec.name}: measured by {spec.measured_by}, not "
                         f"simulated; hwnas estimate --hardware {spec.name} estimates it")
    return spec


@app.command()
def references(hardware: HardwareOpt = DEFAULT_SPEC, as_json: JsonOpt = False):
    """Simulate every reference architecture on a spec and print a table."""
    try:
        spec = simulated_spec(hardware)
    except (SpecError, InputError) as err:
        fail(str(err))
    rows = [simulate_arch(reference(n), spec, per_kernel=False) for n in REFERENCES]
    if as_json:
        echo_json(rows, indent=2)
        return
    console.print(_table(rows, f"reference architectures on {spec.name} "
                               f"({spec.mac_array.rows}x{spec.mac_array.cols} MAC array, "
                               f"{spec.clock_mhz:g} MHz)"))


@app.command()
def specs():
    """List the bundled hardware specs."""
    table = Table(title="bundled hardware specs")
    for col in ("name", "MAC array", "clock MHz", "vector lanes", "SRAM KiB", "DRAM GB/s",
                "fusion", "latency"):
        table.add_column(col)
    broken = []
    for name in available_specs():
        try:
            s = load_spec(name)
        except SpecError as err:
            broken.append(str(err))
            continue
        table.add_row(s.name, f"{s.mac_array.rows}x{s.mac_array.cols}", f"{s.clock_mhz:g}",
                      str(s.vector_unit.lanes), f"{s.sram_kib:g}", f"{s.dram_bandwidth_gb_s:g}",
                      ", ".join("+".join(r) for r in s.fusion),
                      f"measured ({s.measured_by})" if s.measured_by else "simulated")
    console.print(table)
    if broken:  # the good specs are listed; the first broken one is named, exit 2
        more = f" (and {len(broken) - 1} more broken specs)" if len(broken) > 1 else ""
        fail(one_line(broken[0], 240) + more)


@app.command()
def sample(
    hardware: HardwareOpt = DEFAULT_SPEC,
    n: Annotated[int, typer.Option("-n", min=1, max=1_000_000, help="How many architectures.")] = 5,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Sampling seed.")] = 0,
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
