"""DVC stage ``train_supernet``: sandwich-rule training of the weight-sharing supernet.

Writes ``models/supernet.pt`` (weights + search space, ``hwnas.supernet.load_supernet``)
and ``results/train_supernet/metrics.json``. A checkpoint after every epoch
(``models/supernet_ckpt/``, a ``persist: true`` output) lets a killed run resume when
params and code are unchanged. The score proof is the ``eval_supernet`` stage.

Under ``torchrun --nproc_per_node N -m stages.train_supernet`` it trains data-parallel
over N processes (``hwnas.distributed``); rank 0 alone tracks the run and writes outputs.
"""
from __future__ import annotations

import json

from hwnas import layout
from hwnas.params import load_params, run_stage, section


def main() -> None:
    from hwnas import distributed, tracking
    import torch

    from hwnas.checkpoint import claim_run
    from hwnas.context import recipe, train_context
    from hwnas.files import staged
    from hwnas.supernet import supernet_state
    from hwnas.training import train_supernet

    p = section(load_params(), "train_supernet")
    ctx = train_context(p)
    if distributed.rank() != 0:  # torchrun's other ranks train alongside; rank 0 records
        train_supernet(ctx, layout.SUPERNET_CHECKPOINT, progress=False)
        return
    trained = {**p, "train": recipe(p)}  # on a GPU, with cuda's overrides
    flat = {**{k: v for k, v in p.items() if not isinstance(v, dict)},
            **{f"{sec}.{k}": v for sec in ("data", "space", "train")
               for k, v in trained[sec].items()}}
    with tracking.run("train_supernet", flat, tags={"stage": "train_supernet",
                                                    "space": ctx.space.name}) as active:
        claim_run(layout.SUPERNET_CHECKPOINT.with_name("mlflow_run"), active.info.run_id)
        supernet, summary = train_supernet(
            ctx, layout.SUPERNET_CHECKPOINT, progress=True,
            log=lambda metrics, epoch: tracking.log_metrics(metrics, step=epoch))
        summary.update(ctx.splits.summary(), device=str(ctx.device))
        tracking.log_metrics({f"final_{k}": v for k, v in summary.items()})
        with staged() as files:  # both outputs, or neither (and the run FAILED if neither)
            torch.save(supernet_state(supernet.cpu()), files.path(layout.SUPERNET))
            files.json(layout.TRAIN_SUPERNET / "metrics.json", summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    run_stage("train_supernet", main)
