"""Architectures trained from scratch with the baseline's budget, over paired seeds.

One run's test score moves by about as much as the equal-score allowance, so the
score of an architecture from scratch is the mean over ``baseline.seeds`` runs
(seeds ``base.seed`` + 0, 1, ...); the saved model is the run with the best val score.
"""
from __future__ import annotations

import statistics
from dataclasses import replace

from hwnas.params import section


def budget_epochs(params: dict) -> tuple[int, str]:
    """Epochs from scratch and the sentence that states the budget: the chosen models'
    epochs of supernet training plus fine-tuning, unless ``baseline.epochs`` is set."""
    p = section(params, "baseline")
    if p["epochs"] is not None:
        return p["epochs"], f"baseline.epochs = {p['epochs']} epochs (set explicitly)"
    from hwnas.context import recipe

    sup = int(recipe(section(params, "train_supernet"))["epochs"])
    ft = int(params["extract"]["epochs"])
    return sup + ft, (f"{sup + ft} epochs: the chosen model's {sup} epochs of supernet training "
                      f"+ {ft} of fine-tuning")


def scratch_run(ctx, arch: str, epochs: int, seed: int, log=None) -> tuple[dict, dict]:
    """One from-scratch run: the trained weights (on the CPU) and the run's record."""
    from hwnas.arch import parse_arch
    from hwnas.extract import train_scratch

    net, rec = train_scratch(parse_arch(arch), ctx.data(seed), replace(ctx.train, epochs=epochs),
                             seed, log)
    return {k: v.cpu() for k, v in net.state_dict().items()}, rec


def scratch_runs(params: dict, ctx, arch, log=None):
    """``arch`` trained from scratch once per seed (``ctx``: the ``train_supernet``
    section's ``TrainContext``). Returns the model of the run with the best val score and
    a record whose ``score`` is the mean test score of the runs (``score_runs``; the
    returned model's own is ``model_score``). On the CPU the runs go to two workers of one
    thread each (small networks gain little from a second thread; ``hwnas.workers.Fanout``:
    local processes or a Dask cluster); on a GPU they run in turn."""
    from hwnas.context import context_fanout
    from hwnas.model import fresh_model

    p = section(params, "baseline")
    epochs, _ = budget_epochs(params)
    seeds = [p["seed"] + i for i in range(p["seeds"])]
    if len(seeds) == 1 or ctx.device.type != "cpu":
        runs = [scratch_run(ctx, arch.encode(), epochs, seed, log=log) for seed in seeds]
    else:
        runs = [None] * len(seeds)
        with context_fanout(ctx, 2) as fanout:
            jobs = [(arch.encode(), epochs, seed) for seed in seeds]
            for i, run in fanout.each(scratch_run, jobs):
                runs[i] = run
                if log:
                    log(f"seed {seeds[i]}: test {run[1]['score']:.1f}% "
                        f"({run[1]['train_seconds']:.0f} s)")
    vals = [r["val_score"] for _, r in runs]
    best = vals.index(max(vals))  # the run to save: chosen on val, never on test
    state, kept = runs[best]
    net = fresh_model(arch, seeds[best], ctx.device)
    net.load_state_dict(state)
    accs = [r["score"] for _, r in runs]
    return net.eval(), {
        **kept, "score": round(statistics.fmean(accs), 3), "score_runs": accs,
        "val_score_runs": vals, "model_score": kept["score"], "model_seed": seeds[best],
        "seeds": seeds, "train_seconds": round(sum(r["train_seconds"] for _, r in runs), 2)}
