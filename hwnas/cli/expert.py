"""The ``expert`` command: expert rules applied to a baseline."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from hardware.spec import DEFAULT_SPEC, SpecError
from hwnas.arch import ArchError, parse_arch
from hwnas.cli.app import app, console
from hwnas.cli.inputs import (HardwareOpt, InputError, JsonOpt, fail,
                              load_estimator, read_arch, target_spec, warn_out_of_range)
from hwnas.errors import read_yaml
from hwnas.files import dumps, write_json



def _rules(path: Path | None, parallelism: int) -> list:
    """The rules of a YAML/JSON file (a list, or a mapping with ``rules``), or every rule once
    (channels aligned to the spec's parallelism); errors name the file."""
    from hwnas.expert import default_rules, parse_rules

    if path is None:
        return default_rules(parallelism)
    items = read_yaml(path, InputError)
    if isinstance(items, dict) and "rules" in items:
        items = items["rules"]
    if not isinstance(items, list):
        raise InputError(f"{path}: must be a list of rules, e.g. [{{fuse_ibn: {{}}}}], "
                         f"got {type(items).__name__}")
    try:
        return parse_rules(items)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None


def _learned_rules(path: Path, parallelism: int) -> list:
    """The rules learned from a search's pareto.json; errors name the file and entry."""
    from hwnas.expert import learn_rules
    from hwnas.extract import read_pareto

    archs = []
    for i, entry in enumerate(read_pareto(path, require=("pareto",))["pareto"]):
        try:
            archs.append(parse_arch(entry["arch"]))
        except ArchError as err:
            raise InputError(f"{path}: pareto[{i}].arch: {err}") from None
    if not archs:
        raise InputError(f"{path}: 'pareto' is empty, nothing to learn from")
    try:
        return learn_rules(archs, parallelism)
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None


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
    from hwnas.estimator import EstimatorError
    from hwnas.expert import apply_rules

    try:
        est = load_estimator(hardware, estimator)
        baseline = read_arch(arch)
        parallelism = target_spec(hardware).parallelism
        chosen = (_learned_rules(learn_from, parallelism) if learn_from is not None
                  else _rules(rules, parallelism))
    except (ArchError, SpecError, InputError, EstimatorError) as err:
        fail(str(err))

    def cost(archs):
        records = est.estimate(list(archs))
        missing = [r["out_of_range"] for r in records if r["latency_ms"] is None]
        if missing:
            fail(f"the estimator cannot cost {archs[0].name or 'a network'}: {missing[0][0]}")
        return [(r["latency_ms"], r["memory_bytes"]) for r in records]

    (base_lat, base_mem), = cost([baseline])
    results = apply_rules(baseline, chosen, cost, only_gains=not keep_all)
    final = results[-1].arch if results else baseline
    if as_json:  # encoded before the file is written: a non-finite value stops both
        text = dumps({"baseline": {"latency_ms": base_lat, "memory_bytes": base_mem},
                      "rules": [{"rule": r.rule, "latency_ms": r.latency_ms,
                                 "memory_bytes": r.memory_bytes, "latency_gain": r.latency_gain,
                                 "memory_gain": r.memory_gain, "kept": r.kept} for r in results],
                      "arch": final.encode(), "out": str(out)})
    write_json(out, final.to_json())  # whole or not at all
    # warned as estimate warns, once the output is written (an error stays one line)
    warn_out_of_range(est.estimate([baseline] + ([final] if final != baseline else [])))
    if as_json:
        typer.echo(text)
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
