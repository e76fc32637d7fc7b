"""DVC stage ``references``: simulate every reference architecture on the target spec (none
on a measured target)."""
from __future__ import annotations

import json

from hardware.spec import load_spec
from hwnas import layout
from hwnas.files import write_json, write_text
from hwnas.params import load_params, run_stage, section
from hwnas.registry import REFERENCES, reference
from hwnas.simulation import simulate_arch


def main() -> None:
    p = section(load_params(), "references")
    spec = load_spec(p["hardware"])
    # a measured target's spec only sketches the processor: nothing of it is simulated
    rows = [] if spec.measured_by else [
        simulate_arch(reference(n), spec, p["noise"], p["seed"], per_kernel=False)
        for n in REFERENCES]
    if spec.measured_by:
        print(f"references: {spec.name} is measured, not simulated: nothing to write (hwnas "
              f"estimate --hardware {spec.name} --arch NAME estimates a reference)")
    metrics = {r["name"]: {k: r[k] for k in ("latency_ms", "energy_mj", "macs", "params",
                                             "memory_bytes", "utilization")} for r in rows}
    write_json(layout.REFERENCES / "metrics.json", metrics)
    write_text(layout.REFERENCES / "simulated.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    run_stage("references", main)
