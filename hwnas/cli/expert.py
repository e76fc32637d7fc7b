"""The ``expert`` command: expert rules applied to a baseline."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from hardware.spec import DEFAULT_SPEC, SpecError, load_spec
from hwnas.arch import ArchError, parse_arch
from hwnas.cli.app import app, console
from hwnas.cli.inputs import (HardwareOpt, InputError, JsonOpt, fail, load_estimator,
                              read_arch)


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
            from hwnas.extract import read_pareto

            entries = read_pareto(learn_from, require=("pareto",))["pareto"]
            chosen = learn_rules([parse_arch(e["arch"]) for e in entries], parallelism)
        else:
            items = (yaml.safe_load(rules.read_text()) if rules else
                     [{"fuse_ibn": {}}, {"replace_depthwise": {}},
                      {"align_channels": {"multiple": parallelism}},
                      {"even_channels": {}},
                      {"pin_block_type": {"type": "fused_ibn", "min_scale": 0.25}}])
            chosen = parse_rules(items.get("rules", items) if isinstance(items, dict) else items)
    except yaml.YAMLError as err:
        fail(f"{rules}: not valid YAML: {err}")
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
    try:  # whole or not at all
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(final.to_json(), indent=2) + "\n")
        tmp.replace(out)
    except OSError as err:
        fail(f"--out {out}: cannot write: {err.strerror}")
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
