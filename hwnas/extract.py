"""Materialize searched networks: read the search's choices, extract them from the
supernet as standalone models, fine-tune briefly, recalibrate BN, measure score,
save them (weights + architecture string) and export them to ONNX with a check
that onnxruntime computes what PyTorch does.

Pure functions over objects; the ``extract`` and ``baseline`` stages do the I/O.

    pareto = read_pareto(Path("results/classification/search/pareto.json"))
    archs = pick_subnets(pareto, ("latency", "memory"), extra=2, source="pareto.json")
    net, record = materialize(supernet, arch, data, FineTune(epochs=1, lr=0.01))
    save_subnet(net, arch, "models/classification/subnets/latency.pt", record)
    diff = export_onnx(net, "models/classification/subnets/latency.onnx", example)
"""
from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas.arch import ArchError, ArchSpec, parse_arch
from hwnas.errors import UserError
from hwnas.model import build_model, fit_input, fresh_model
from hwnas.supernet import SuperNet, SupernetError, task_score, extract_subnet, recalibrate_bn
from hwnas.training import TrainConfig, train_from_scratch

CHOICES = ("latency", "memory")
FAMILY_NAMES = tuple("ABCDEFGHIJ")  # a family's members (search.family), by increasing cut


def resolution_twin(member: str) -> str:
    """The name of a family member's twin: its blocks and head width at the baseline's input
    resolution and output stride, trained alike to show what the searched resolution bought."""
    return f"{member}-baseline-resolution"


class ExtractError(UserError):
    """Unusable input to extraction (a missing or malformed file, a null choice); the
    message names the file and the key."""


# ---- the search's output -----------------------------------------------------------------


def read_pareto(path: str | Path, require: Sequence[str] = ("baseline", "chosen", "pareto")) -> dict:
    """``pareto.json`` written by the ``search`` stage, checked for the keys ``require``s."""
    path = Path(path)
    if not path.is_file():
        raise ExtractError(f"{path}: not found; run the search stage first "
                           f"(dvc repro search)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ExtractError(f"{path}: cannot read as JSON: {err}") from None
    if not isinstance(data, dict):
        raise ExtractError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key in require:
        if key not in data:
            raise ExtractError(f"{path}: missing key '{key}'")
    if "chosen" in require and not isinstance(data["chosen"], dict):
        raise ExtractError(f"{path}: 'chosen' must be an object with 'latency' and 'memory'")
    if not isinstance(data.get("pareto", []), list) or not all(
            isinstance(e, dict) and isinstance(e.get("arch"), str) for e in data.get("pareto", [])):
        raise ExtractError(f"{path}: 'pareto' must be a list of networks, each with an 'arch'")
    if "baseline" in require and (not isinstance(data["baseline"], dict)
                                  or "arch" not in data["baseline"]):
        raise ExtractError(f"{path}: 'baseline' must be an object with 'arch'")
    return data


def _arch(text, where: str) -> ArchSpec:
    if not isinstance(text, str):
        raise ExtractError(f"{where}: expected an architecture string, got {text!r}")
    try:
        return parse_arch(text).with_name("")
    except ArchError as err:
        raise ExtractError(f"{where}: {err}") from None


def pick_subnets(pareto: dict, chosen: Sequence[str] = CHOICES, extra: int = 0,
                 source: str = "pareto.json") -> dict[str, ArchSpec]:
    """Name -> architecture: each ``chosen`` entry (``latency``, ``memory``, a family's
    ``A``...), then
    ``extra`` further Pareto networks spread evenly over the front's latency range
    (``pareto-1`` fastest), skipping networks already picked. A null latency or memory
    choice is an error naming ``source`` and the key; a null family member (no candidate
    in its band of latency cuts) is left out: the evaluation tables the members there are."""
    out: dict[str, ArchSpec] = {}
    for name in chosen:
        if name not in pareto["chosen"]:
            raise ExtractError(f"{source}: chosen.{name} is missing (known: "
                               f"{', '.join(pareto['chosen'])})")
        text = pareto["chosen"][name]
        if text is None and name not in ("latency", "memory"):
            continue
        if text is None:
            why = {"latency": "no Pareto network reaches the baseline's score",
                   "memory": "no network fits the memory budget within 1 point of the "
                             "baseline"}[name]
            raise ExtractError(f"{source}: chosen.{name} is null ({why}); nothing to extract. "
                               f"Search longer (search.candidates) or drop '{name}' from "
                               f"extract.chosen")
        out[name] = _arch(text, f"{source}: chosen.{name}")
    front = sorted(pareto["pareto"], key=lambda r: r.get("latency_ms", 0.0))
    picked = set(out.values())
    pool = [(i, a) for i, r in enumerate(front)
            if (a := _arch(r.get("arch"), f"{source}: pareto[{i}].arch")) not in picked]
    if extra > 0 and pool:
        idx = np.unique(np.linspace(0, len(pool) - 1, min(extra, len(pool))).round().astype(int))
        for k, j in enumerate(idx, 1):
            out[f"pareto-{k}"] = pool[j][1]
    return out


def resolution_twins(archs: dict[str, ArchSpec], baseline: ArchSpec) -> dict[str, ArchSpec]:
    """Each family member (``A``...) whose input resolution or output stride differs from the
    baseline's, at the baseline's (``resolution_twin``)."""
    at = baseline.resolution_and_stride()
    return {resolution_twin(n): a.at_resolution(*at).with_name("") for n, a in archs.items()
            if n in FAMILY_NAMES and a.resolution_and_stride() != at}


def search_record(pareto: dict, arch: ArchSpec) -> dict:
    """The search's own figures for ``arch`` (score, estimated latency/memory), or {}:
    the baseline, the chosen networks (which need not be on the front) or the front."""
    chosen = pareto.get("chosen_scores")
    for r in [pareto["baseline"], *(chosen.values() if isinstance(chosen, dict) else ()),
              *pareto["pareto"]]:
        try:
            if parse_arch(r["arch"]) == arch:
                return {k: r[k] for k in ("score", "latency_ms", "memory_bytes") if k in r}
        except (ArchError, KeyError, TypeError):
            continue
    return {}


# ---- fine-tuning --------------------------------------------------------------------------


@dataclass(frozen=True)
class FineTune:
    """A short fine-tune with the supernet's optimizer and schedule (SGD + cosine)."""

    epochs: int = 1
    lr: float = 0.01
    warmup_epochs: float = 0.0
    calib_batches: int = 8

    def config(self, base: TrainConfig) -> TrainConfig:
        return replace(base, epochs=self.epochs, lr=self.lr, warmup_epochs=self.warmup_epochs)


@dataclass
class Data:
    """What extraction needs from a dataset: augmented training batches (a factory,
    so each model sees the same order), calibration batches and the test split."""

    train: Callable[[], Iterable]
    calib: Iterable
    test: Iterable
    train_config: TrainConfig
    val: Iterable | None = None  # for choosing between fine-tuned and from-scratch weights
    device: str | torch.device = "cpu"  # where the loaders put their batches


def materialize(supernet: SuperNet, arch: ArchSpec, data: Data, ft: FineTune,
                seed: int = 0, log: Callable[[str], None] | None = None) -> tuple[nn.Module, dict]:
    """Extract ``arch`` from the supernet, recalibrate BN and measure the inherited test
    score, fine-tune ``ft.epochs`` epochs, recalibrate again and measure the final
    test score. Returns the model (eval mode) and its record."""
    try:
        net = extract_subnet(supernet, arch)
    except SupernetError as err:
        raise ExtractError(f"{arch.encode()}: not in the supernet's space: {err}") from None
    recalibrate_bn(net, data.calib, ft.calib_batches)
    inherited = task_score(net, data.test)
    t0 = time.perf_counter()
    if ft.epochs > 0:
        torch.manual_seed(seed)
        train_from_scratch(net, data.train(), ft.config(data.train_config),
                           on_step=_progress(log, ft.epochs, data))
        recalibrate_bn(net, data.calib, ft.calib_batches)
    seconds = time.perf_counter() - t0
    acc = task_score(net, data.test)
    return net.eval(), {"arch": arch.encode(), "inherited_score": inherited,
                        "score": acc, **_val_score(net, data), "finetune_epochs": ft.epochs,
                        "finetune_seconds": round(seconds, 2),
                        "params": sum(p.numel() for p in net.parameters())}


def _val_score(net: nn.Module, data: Data) -> dict:
    return {} if data.val is None else {"val_score": task_score(net, data.val)}


def keep_better(finetuned: tuple[nn.Module, dict],
                scratch: tuple[nn.Module, dict]) -> tuple[nn.Module, dict]:
    """Of one architecture's fine-tuned and from-scratch models, the one with the higher
    val score (a tie keeps the fine-tuned one): the choice never sees the test split.
    Returns that model and the fine-tuned record updated with both recipes' figures."""
    (fnet, frec), (snet, srec) = finetuned, scratch
    rec = {**frec, "finetuned_score": frec["score"], "scratch_score": srec["score"],
           "scratch_val_score": srec["val_score"], "scratch_epochs": srec["epochs"],
           "scratch_seconds": srec["train_seconds"],
           **({"scratch_score_runs": srec["score_runs"]} if "score_runs" in srec else {})}
    if srec["val_score"] > frec["val_score"]:
        # the saved run's own score (``scratch_score`` may be a mean over seeds)
        return snet, {**rec, "weights": "scratch",
                      "score": srec.get("model_score", srec["score"])}
    return fnet, {**rec, "weights": "finetuned"}


def train_scratch(arch: ArchSpec, data: Data, cfg: TrainConfig, seed: int = 0,
                  log: Callable[[str], None] | None = None) -> tuple[nn.Module, dict]:
    """``arch`` trained from scratch (``cfg.epochs`` epochs) and its test score."""
    net = fresh_model(arch, seed, data.device)
    t0 = time.perf_counter()
    train_from_scratch(net, data.train(), cfg, on_step=_progress(log, cfg.epochs, data))
    seconds = time.perf_counter() - t0
    acc = task_score(net, data.test)
    return net.eval(), {"arch": arch.encode(), "score": acc, **_val_score(net, data),
                        "epochs": cfg.epochs,
                        "train_seconds": round(seconds, 2),
                        "params": sum(p.numel() for p in net.parameters())}


def _progress(log, epochs: int, data: Data):
    """A step callback that logs once per epoch (steps per epoch from the loader)."""
    if log is None:
        return None
    try:
        per_epoch = len(data.train())
    except TypeError:
        return None
    t0 = time.perf_counter()

    def on_step(step: int) -> None:
        if per_epoch and step % per_epoch == 0:
            log(f"epoch {step // per_epoch}/{epochs} ({time.perf_counter() - t0:.0f} s)")
    return on_step


# ---- persistence and ONNX -----------------------------------------------------------------


def save_subnet(net: nn.Module, arch: ArchSpec, path: str | Path, record: dict | None = None) -> None:
    """Weights + architecture string (+ a flat record of numbers/strings), loadable
    with ``torch.load(..., weights_only=True)``; written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in (record or {}).items() if isinstance(v, (int, float, str))}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"arch": arch.key, "state_dict": net.state_dict(),
                "record": meta}, tmp)
    os.replace(tmp, path)


def load_subnet(path: str | Path) -> tuple[nn.Module, ArchSpec]:
    """Rebuild a model saved by ``save_subnet`` (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise ExtractError(f"{path}: not found")
    data = torch.load(path, map_location="cpu", weights_only=True)
    arch = _arch(data.get("arch"), f"{path}: arch")
    net = build_model(arch)
    net.load_state_dict(data["state_dict"])
    return net.eval(), arch


def export_onnx(net: nn.Module, path: str | Path, example: torch.Tensor,
                check_inputs: torch.Tensor | None = None) -> float:
    """Export with the TorchScript exporter (``dynamo=False``; dynamic batch axis) and
    return the largest absolute difference between onnxruntime's and PyTorch's logits
    on ``check_inputs`` (default: ``example``). Exports a CPU copy: ``net`` may be on a GPU.
    The images are first scaled to the network's input (the host's work, ``fit_input``), so
    the graph is the network alone, at its own resolution."""
    import copy

    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(net).cpu().eval()
    example = fit_input(example.cpu(), net.arch.input)
    if check_inputs is not None:
        check_inputs = fit_input(check_inputs.cpu(), net.arch.input)
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is legacy
        warnings.simplefilter("ignore", DeprecationWarning)
        # fit_input's size check is traced as a constant: the graph's input is that size
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(net, (example[:1],), str(tmp), dynamo=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"},
                                                                 "logits": {0: "batch"}},
                          opset_version=17)
    os.replace(tmp, path)
    x = example if check_inputs is None else check_inputs.cpu()
    with torch.no_grad():
        want = net(x).numpy()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"image": x.numpy().astype(np.float32)})[0]
    return float(np.max(np.abs(got - want)))
