"""How many seeds does "equal score" need to survive a rerun? The evaluate stage's latency
model and the baseline trained from scratch on seeds ``seed`` .. ``seed + n - 1`` twice: as the
pipeline trains them (worker processes of one torch thread) and with two threads per run,
which changes only the float rounding of training, as another machine would. For each number
of seeds the paired difference's 95% interval and the verdict ("shown equal" within
``evaluate.non_inferiority_margin``) under both; the seeds the verdict needs are those from
which the two agree.

Run (repo root, after ``hwnas run``):  .venv/bin/python bench/bench_verdict.py [--seeds 10]
Runs are kept in ``results/experiments/verdict.jsonl`` (a rerun trains only what is missing).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root
from hwnas import layout  # noqa: E402
from hwnas.context import context_fanout, train_context  # noqa: E402
from hwnas.evaluation.metrics import equality  # noqa: E402
from hwnas.files import append_journal, read_journal  # noqa: E402
from hwnas.params import load_params, section  # noqa: E402
from hwnas.scratch import budget_epochs, scratch_run  # noqa: E402


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args()
    params = load_params()
    margin = float(section(params, "evaluate")["non_inferiority_margin"])
    m = json.loads((layout.EVALUATE / "metrics.json").read_text())
    archs = {"chosen": m["arch"], "baseline": m["baseline_arch"]}
    ctx = train_context(section(params, "train_supernet"))
    epochs, _ = budget_epochs(params)
    seed0 = params["base"]["seed"]
    cache = layout.RESULTS / "experiments" / "verdict.jsonl"
    # a run is reused only for the same network and budget (the latency model may change)
    done = {(r["net"], r["threads"], r["seed"]): r["score"] for r in read_journal(cache)
            if r["arch"] == archs[r["net"]] and r["epochs"] == epochs}
    jobs = [(net, threads, seed0 + i) for threads in (1, 2) for net in archs
            for i in range(args.seeds) if (net, threads, seed0 + i) not in done]
    t0 = time.perf_counter()

    def keep(net, threads, seed, score):
        done[net, threads, seed] = score
        append_journal(cache, [{"net": net, "arch": archs[net], "threads": threads,
                                "seed": seed, "epochs": epochs, "score": score}])
        print(f"{net} seed {seed}, {threads} thread(s): {score:.2f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    ones = [j for j in jobs if j[1] == 1]
    if ones:
        with context_fanout(ctx, 2) as fanout:
            for k, (_, rec) in fanout.each(scratch_run, [(archs[n], epochs, s)
                                                         for n, _, s in ones]):
                keep(*ones[k], rec["score"])
    torch.set_num_threads(2)
    for net, threads, seed in (j for j in jobs if j[1] == 2):
        keep(net, threads, seed, scratch_run(ctx, archs[net], epochs, seed)[1]["score"])

    print(f"\nlatency model {archs['chosen']}\nmargin {margin:g} points; "
          f"interval: 95%, Student's t over paired seeds")
    print("seeds | 1 thread: delta [95% interval] verdict | 2 threads: delta [95% interval] "
          "verdict | agree")
    for n in range(2, args.seeds + 1):
        cells, verdicts = [], []
        for threads in (1, 2):
            ours = [done["chosen", threads, seed0 + i] for i in range(n)]
            base = [done["baseline", threads, seed0 + i] for i in range(n)]
            e = equality(ours, base, margin)
            lo, hi = e["score_delta_ci95"]
            d = statistics.fmean(ours) - statistics.fmean(base)
            verdicts.append(e["shown_equal"])
            cells.append(f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] "
                         f"{'equal' if e['shown_equal'] else 'not shown'}")
        print(f"{n} | {cells[0]} | {cells[1]} | {'yes' if verdicts[0] == verdicts[1] else 'NO'}")


if __name__ == "__main__":
    main()
