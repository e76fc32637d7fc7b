"""DVC stage ``train_supernet``: sandwich-rule training of the weight-sharing supernet.

Writes ``models/supernet.pt`` (weights + search space, loadable with
``hwnas.supernet.load_supernet``) and ``results/train_supernet/metrics.json``.
A checkpoint is written after every epoch to ``models/supernet_ckpt/`` (a
``persist: true`` output); rerunning after a crash or kill resumes from it when
the params are unchanged. The accuracy proof (inherited vs from scratch) is the
separate ``eval_supernet`` stage, because it trains ten subnets from scratch.
"""
from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a busy machine spinning threads
# make every op wait for a descheduled peer (2-3x slower training measured here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hardware.spec import load_spec
from hwnas.data import Loader, Splits, TensorData, load_dataset
from hwnas.params import load_params, section
from hwnas.space import SearchSpace, SpaceConfig, curated_space
from hwnas.supernet import SuperNet, subnet_accuracy, supernet_state
from hwnas.training import TrainConfig, make_optimizer, supernet_epoch

MODEL = Path("models/supernet.pt")
CKPT_DIR = Path("models/supernet_ckpt")
OUT = Path("results/train_supernet")


@dataclass
class Setup:
    params: dict
    splits: Splits
    space: SearchSpace
    train: TrainConfig
    device: torch.device

    def loader(self, split: str = "train", train: bool = False, seed: int = 0) -> Loader:
        """Training batches (shuffled, augmented) or plain batches of a split; ``a+b``
        joins splits (e.g. ``val+test`` for a larger evaluation set)."""
        parts = [getattr(self.splits, name) for name in split.split("+")]
        data = parts[0] if len(parts) == 1 else TensorData(torch.cat([p.x for p in parts]),
                                                           torch.cat([p.y for p in parts]))
        if train:
            return Loader(data, self.train.batch_size, shuffle=True, max_shift=self.train.max_shift,
                          seed=seed, device=self.device, drop_last=True)
        return Loader(data, 256, device=self.device)

    def calib_loader(self) -> Loader:
        """Training images, shuffled once by the seed, without augmentation: BN recalibration."""
        return Loader(self.splits.train, 256, shuffle=True, seed=self.params["seed"] + 1,
                      device=self.device)


def _tuples(d: dict) -> dict:
    return {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list)
            else v for k, v in d.items()}


def setup(params: dict) -> Setup:
    """Dataset, curated search space and training config from the stage's params."""
    device = torch.device(params.get("device", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("train_supernet: device is 'cuda' but no CUDA device is available")
    if device.type == "cpu" and params.get("threads"):
        torch.set_num_threads(int(params["threads"]))
    d = params["data"]
    splits = load_dataset(d["dataset"], d["resolution"], params["seed"], d["val_fraction"],
                          d["test_fraction"])
    cfg = SpaceConfig(resolution=splits.resolution, in_channels=splits.channels,
                      classes=splits.classes, **_tuples(params["space"]))
    space = curated_space(load_spec(params["hardware"]), cfg)
    return Setup(params, splits, space, TrainConfig.from_params(params["train"]), device)


def fingerprint(params: dict) -> str:
    """What a checkpoint must agree with to be resumed (everything but the device)."""
    keep = {k: v for k, v in params.items() if k not in ("device", "threads")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_fingerprint(params: dict) -> str:
    """A checkpoint resumes only with the same params and the same supernet and training
    code: a checkpoint of other code would silently stand in for a retrain."""
    import hwnas.supernet
    import hwnas.training

    code = "".join(Path(m.__file__).read_text() for m in (hwnas.supernet, hwnas.training))
    return fingerprint({**params, "code": hashlib.sha256(code.encode()).hexdigest()})


def save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, fp: str, device: torch.device) -> dict | None:
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # a torn or foreign file: start over, but say so
        print(f"train_supernet: ignoring unreadable checkpoint {path}: {err}")
        return None
    if ckpt.get("fingerprint") != fp:
        print(f"train_supernet: {path} was written with other params or code; starting over")
        return None
    return ckpt


def _mark_killed(run_id: str | None) -> None:
    """A SIGKILLed run stays RUNNING in MLflow; close it when we resume."""
    if not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        from hwnas.tracking import tracking_uri

        client = MlflowClient(tracking_uri())
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")
    except Exception:  # tracking is lineage, never a reason to fail training
        pass


def evaluate_extremes(supernet: SuperNet, s: Setup) -> dict:
    calib, val = s.calib_loader(), s.loader("val")
    nb = s.params.get("calib_batches", 8)
    return {"val_acc_largest": subnet_accuracy(supernet, supernet.largest(), calib, val, nb),
            "val_acc_smallest": subnet_accuracy(supernet, supernet.smallest(), calib, val, nb)}


def train(s: Setup, ckpt_path: Path = CKPT_DIR / "last.pt", progress: bool = True,
          log=None) -> tuple[SuperNet, dict]:
    """Train (or resume) the supernet; checkpoint after every epoch. ``log(metrics, epoch)``
    receives each epoch's metrics. Returns the supernet and the final summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    seed, cfg = s.params["seed"], s.train
    fp = checkpoint_fingerprint(s.params)
    torch.manual_seed(seed)
    supernet = SuperNet(s.space, s.params.get("kernel_transform", True)).to(s.device)
    opt = make_optimizer(supernet, cfg)
    loader = s.loader("train", train=True, seed=seed)
    rng = np.random.default_rng(seed)
    start_epoch, step, history, elapsed = 0, 0, [], 0.0
    ckpt = load_checkpoint(ckpt_path, fp, s.device)
    if ckpt is not None:
        supernet.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        loader.load_state_dict(ckpt["loader"])
        rng.bit_generator.state = json.loads(ckpt["rng"])
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], json.loads(ckpt["history"])
        elapsed = ckpt["train_seconds"]
        print(f"train_supernet: resuming after epoch {start_epoch}/{cfg.epochs} from {ckpt_path}")
    total = cfg.epochs * len(loader)
    columns = (TextColumn("[bold]supernet[/] epoch {task.fields[epoch]}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[info]}"))
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("train", total=total, completed=step, epoch=start_epoch + 1, info="")
        for epoch in range(start_epoch, cfg.epochs):
            bar.update(task, epoch=f"{epoch + 1}/{cfg.epochs}")
            t0 = time.perf_counter()
            metrics, step = supernet_epoch(supernet, loader, opt, cfg, rng, step, total,
                                           on_step=lambda n: bar.update(task, completed=n))
            epoch_s = time.perf_counter() - t0
            elapsed += epoch_s
            metrics.update(evaluate_extremes(supernet, s), epoch=epoch + 1, epoch_seconds=epoch_s,
                           lr=opt.param_groups[0]["lr"])
            history.append(metrics)
            info = (f"val largest {metrics['val_acc_largest']:.1f}% "
                    f"smallest {metrics['val_acc_smallest']:.1f}%")
            bar.update(task, info=info)
            if progress:
                bar.console.print(f"epoch {epoch + 1}/{cfg.epochs}: {epoch_s:.0f} s, "
                                  f"loss {metrics['loss_largest']:.3f}, {info}")
            save_atomic({"fingerprint": fp, "epoch": epoch + 1, "step": step,
                         "model": supernet.state_dict(), "optimizer": opt.state_dict(),
                         "loader": loader.state_dict(), "rng": json.dumps(rng.bit_generator.state),
                         "history": json.dumps(history), "train_seconds": elapsed,
                         "run_id": getattr(log, "run_id", None)}, ckpt_path)
            if log:
                log(metrics, epoch + 1)
    summary = {"epochs": cfg.epochs, "train_seconds": round(elapsed, 1),
               "epoch_seconds_mean": round(elapsed / max(1, cfg.epochs), 2),
               "val_acc_largest": history[-1]["val_acc_largest"] if history else None,
               "val_acc_smallest": history[-1]["val_acc_smallest"] if history else None,
               "params": sum(p.numel() for p in supernet.parameters()),
               "space_size": float(s.space.size())}
    return supernet, summary


def main() -> None:
    from hwnas import tracking

    p = section(load_params(), "train_supernet")
    s = setup(p)
    ckpt_path = CKPT_DIR / "last.pt"
    old = load_checkpoint(ckpt_path, checkpoint_fingerprint(p), s.device)
    _mark_killed(old.get("run_id") if old else None)
    flat = {**{k: v for k, v in p.items() if not isinstance(v, dict)},
            **{f"{sec}.{k}": v for sec in ("data", "space", "train") for k, v in p[sec].items()}}
    with tracking.run("train_supernet", flat, tags={"stage": "train_supernet",
                                                    "space": s.space.name}) as active:
        def log(metrics, epoch):
            tracking.log_metrics(metrics, step=epoch)
        log.run_id = active.info.run_id
        supernet, summary = train(s, ckpt_path, progress=True, log=log)
        summary.update(s.splits.summary(), device=str(s.device))
        tracking.log_metrics({f"final_{k}": v for k, v in summary.items()})
    save_atomic(supernet_state(supernet.cpu()), MODEL)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
