"""LightGBM latency models per kernel (or block) kind, saved as text files + a manifest.

Training regresses log latency on the named features of the microbenchmark rows (the
median over repeats); one model per kind. ``Estimator`` loads a saved directory and
predicts whole networks: decompose into kernels, one ``predict`` call per kind, sum per
network. Memory (parameter and peak activation bytes) comes from the graph, not a model.
Nothing here imports the simulator.
"""
from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hardware.spec import HardwareSpec
from hwnas.arch import ArchSpec, encode
from hwnas.errors import UserError
from hwnas.layout import HOST_TARGETS
from hwnas.estimator.decompose import (GROUPING, RANGE_FEATURES, decompose, network_memory,
                                      op_table)
from hwnas.lowering import unit_name

MANIFEST = "manifest.json"
FORMAT = 2  # 2: each model file's size and sha256 are in the manifest
def retrain(folder: Path) -> str:
    """How to rebuild the estimator in ``folder``: a host target has its own stage, a
    device team's timings their own command."""
    if folder.name == "imported":
        return "retrain it: hwnas import-timings FILE --plan DIR"
    if folder.name in HOST_TARGETS:
        return (f"retrain it: dvc repro train_estimator_host@{folder.name} (train_estimator "
                f"where base.hardware is {folder.name})")
    return "retrain it: dvc repro train_estimator (or hwnas train-estimator)"
MIN_ROWS = 5  # fewest measured kernels of a kind worth a model


class EstimatorError(UserError):
    """An estimator directory that cannot be used; the message names the file or field."""


@dataclass
class LightGBMConfig:
    n_estimators: int = 200
    learning_rate: float = 0.1
    num_leaves: int = 15
    min_data_in_leaf: int = 5
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.9
    linear_tree: bool = True     # a linear model in each leaf, on log features
    seed: int = 0
    num_threads: int = 2


def _log_frame(x: pd.DataFrame) -> np.ndarray:
    """Features as log1p (trees don't care; leaf-linear models fit power laws)."""
    return np.log1p(np.maximum(x.to_numpy(dtype=np.float64), 0.0))


def _log_rows(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(x, 0.0))


def training_frame(table: pd.DataFrame) -> pd.DataFrame:
    """One row per measured kernel: features plus the median latency over repeats."""
    keys = ["sample", "kernel_index"]
    med = table.groupby(keys, sort=False)["latency_ms"].median()
    first = table.drop_duplicates(keys).set_index(keys)
    first["latency_ms"] = med
    first = first.reset_index()
    first["kind"] = first["kind"].astype(str)
    return first


def fit_models(frame: pd.DataFrame, features: list[str], cfg: LightGBMConfig) -> dict:
    import lightgbm as lgb

    models = {}
    params = {"objective": "regression", "learning_rate": cfg.learning_rate,
              "num_leaves": cfg.num_leaves, "min_data_in_leaf": cfg.min_data_in_leaf,
              "feature_fraction": cfg.feature_fraction, "bagging_fraction": cfg.bagging_fraction,
              "bagging_freq": 1 if cfg.bagging_fraction < 1 else 0, "seed": cfg.seed,
              "deterministic": True, "num_threads": cfg.num_threads, "verbosity": -1,
              "linear_tree": cfg.linear_tree, "linear_lambda": 1e-3}
    for kind, part in frame.groupby("kind", sort=True):
        if kind == "network" or len(part) < MIN_ROWS:  # whole networks calibrate, not train  # too few to fit: the kind stays unknown (flagged)
            continue
        y = np.log(part["latency_ms"].to_numpy())
        p = dict(params, min_data_in_leaf=min(cfg.min_data_in_leaf, max(1, len(part) // 4)))
        ds = lgb.Dataset(_log_frame(part[features]), y, feature_name=list(features),
                         params={"verbosity": -1, "min_data_in_bin": 1})
        models[kind] = lgb.train(p, ds, num_boost_round=cfg.n_estimators)
    return models


def predict_rows(models: dict, rows: pd.DataFrame, features: list[str]) -> np.ndarray:
    """Latency (ms) per row; NaN where no model exists for the row's kind."""
    out = np.full(len(rows), np.nan)
    kinds = rows["kind"].astype(str).to_numpy()
    for kind in np.unique(kinds):
        if kind in models:
            mask = kinds == kind
            out[mask] = np.exp(models[kind].predict(_log_frame(rows.loc[mask, features])))
    return out


def fit_calibration(frame: pd.DataFrame, models: dict, features: list[str],
                    grouping: str, spec: HardwareSpec | None) -> dict | None:
    """Whole-network latency = scale * (sum of unit predictions) + per_unit_ms * units,
    least squares in relative error over the table's timed networks (``kind == network``).
    A network run costs more than its units timed alone (caches, dispatch)."""
    from hwnas.arch import decode

    nets = frame[frame["kind"] == "network"]
    if len(nets) < 5:
        return None
    archs = [decode(a) for a in nets["arch"]]
    df = decompose(archs, spec, grouping)
    pred = predict_rows(models, df, features)
    total = np.bincount(df["net"].to_numpy(), weights=pred, minlength=len(archs))
    units = np.bincount(df["net"].to_numpy(), minlength=len(archs)).astype(float)
    true = nets["latency_ms"].to_numpy()
    ok = np.isfinite(total) & (true > 0)
    if ok.sum() < 5:  # networks with an unmodelled kind cannot calibrate
        return None
    total, units, true = total[ok], units[ok], true[ok]
    a = np.stack([total / true, units / true], axis=1)
    (scale, per_unit), *_ = np.linalg.lstsq(a, np.ones(len(true)), rcond=None)
    before = np.sqrt(np.mean((total / true - 1) ** 2))
    after = np.sqrt(np.mean(((scale * total + per_unit * units) / true - 1) ** 2))
    return {"scale": float(scale), "per_unit_ms": float(per_unit), "networks": int(len(true)),
            "rmspe_before": float(before), "rmspe_after": float(after)}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hash(path: Path) -> str:
    return sha256(path)[:16]


def _model_file(kind: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", kind.replace("+", "__")) + ".txt"


def library_versions() -> dict:
    import lightgbm

    return {"python": platform.python_version(), "lightgbm": lightgbm.__version__,
            "numpy": np.__version__, "pandas": pd.__version__}


def save(models: dict, out_dir: Path, *, backend: str, grouping: str, features: list[str],
         frame: pd.DataFrame, spec: HardwareSpec | None, data_hash: str,
         cfg: LightGBMConfig, bytes_per_element: int, host: dict | None = None,
         calibration: dict | None = None) -> dict:
    """Write the models and their manifest (with each file's size and sha256) to ``out_dir``.
    The CLI passes a temporary folder that replaces the target whole (``atomic_dir``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kinds = {}
    for kind, booster in models.items():
        name = _model_file(kind)
        booster.save_model(str(out_dir / name))
        part = frame[frame["kind"] == kind]
        kinds[kind] = {"file": name, "bytes": (out_dir / name).stat().st_size,
                       "sha256": sha256(out_dir / name), "rows": int(len(part)),
                       "ranges": {f: [float(part[f].min()), float(part[f].max())]
                                  for f in RANGE_FEATURES}}
    manifest = {
        "format": FORMAT, "backend": backend, "grouping": grouping,
        "target": "log(latency_ms)", "feature_transform": "log1p",
        "hardware": spec.name if spec is not None else backend,
        "spec_hash": spec.spec_hash() if spec is not None else None,
        "bytes_per_element": bytes_per_element,
        "features": list(features), "kinds": kinds, "data_hash": data_hash,
        "train": asdict(cfg), "versions": library_versions(), "host": host or {},
        "calibration": calibration,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    return manifest


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_range(v) -> bool:
    return (isinstance(v, list) and len(v) == 2 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v))


# The manifest's keys and the check each value must pass (what it must be, in words).
_MANIFEST_KEYS = {
    "backend": (lambda v: v in GROUPING, "one of " + ", ".join(GROUPING)),
    "grouping": (_is_str, "a string"),
    "features": (lambda v: isinstance(v, list) and v and all(map(_is_str, v)),
                 "a non-empty list of feature names"),
    "kinds": (lambda v: isinstance(v, dict), "an object (kernel kind -> model entry)"),
    "spec_hash": (lambda v: v is None or _is_str(v), "a string or null"),
    "hardware": (_is_str, "a string"),
    "bytes_per_element": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
}
_KIND_KEYS = {
    "file": (lambda v: _is_str(v) and re.fullmatch(r"[a-z0-9_]+\.txt", v),
             "a model file name in the estimator directory"),
    "bytes": (_is_int, "the model file's size in bytes"),
    "sha256": (lambda v: _is_str(v) and re.fullmatch(r"[0-9a-f]{64}", v),
               "the model file's sha256 (64 hex digits)"),
    "ranges": (lambda v: isinstance(v, dict) and all(map(_is_range, v.values())),
               "an object of [min, max] pairs"),
}


def check_manifest(manifest, mpath: Path) -> dict:
    """Every key ``Estimator`` reads, with its type; EstimatorError naming the key."""
    if not isinstance(manifest, dict):
        raise EstimatorError(f"{mpath}: the manifest must be a JSON object")
    if manifest.get("format") != FORMAT:
        raise EstimatorError(f"{mpath}: manifest format {manifest.get('format')!r}, this "
                             f"version reads {FORMAT} (with model checksums); {retrain(mpath.parent)}")
    for key, (ok, what) in _MANIFEST_KEYS.items():
        if key not in manifest:
            raise EstimatorError(f"{mpath}: manifest lacks key '{key}'")
        if not ok(manifest[key]):
            raise EstimatorError(f"{mpath}: key '{key}' must be {what}, "
                                 f"got {type(manifest[key]).__name__}")
    for kind, entry in manifest["kinds"].items():
        for key, (ok, what) in _KIND_KEYS.items():
            if not isinstance(entry, dict) or key not in entry:
                raise EstimatorError(f"{mpath}: key 'kinds.{kind}' lacks '{key}'; {retrain(mpath.parent)}")
            if not ok(entry[key]):
                raise EstimatorError(f"{mpath}: key 'kinds.{kind}.{key}' must be {what}")
    cal = manifest.get("calibration")
    if cal is not None and not (isinstance(cal, dict) and all(
            isinstance(cal.get(k), (int, float)) and np.isfinite(cal[k])
            for k in ("scale", "per_unit_ms"))):
        raise EstimatorError(f"{mpath}: key 'calibration' must be null or an object with "
                             "finite 'scale' and 'per_unit_ms'")
    return manifest


def _verified(path: Path, entry: dict, kind: str) -> Path:
    """The model file of ``entry`` once its size and sha256 match the manifest's: LightGBM
    aborts the process, or crashes it, on some damaged files, so it never sees one."""
    f = path / entry["file"]
    if not f.is_file():
        raise EstimatorError(f"{f}: model file for kernel kind '{kind}' is missing")
    try:
        size, digest = f.stat().st_size, sha256(f)
    except OSError as err:
        raise EstimatorError(f"{f}: cannot read: {err.strerror}") from None
    if size != entry["bytes"] or digest != entry["sha256"]:
        raise EstimatorError(f"{f}: checksum mismatch, the file is damaged; {retrain(path)}")
    return f


class Estimator:
    """Latency from saved LightGBM models, memory from the graph."""

    def __init__(self, manifest: dict, models: dict, spec: HardwareSpec | None, path: Path):
        self.manifest, self.models, self.spec, self.path = manifest, models, spec, path
        self.features = manifest["features"]
        self.grouping = manifest["grouping"]
        self.bytes_per_element = manifest["bytes_per_element"]
        self.ranges = {k: v["ranges"] for k, v in manifest["kinds"].items()}
        self.threads = 0  # LightGBM's default: all cores
        self.calibration = manifest.get("calibration") or {"scale": 1.0, "per_unit_ms": 0.0}

    def _network_latency(self, df: pd.DataFrame, n: int) -> np.ndarray:
        nets = df["net"].to_numpy()
        total = np.bincount(nets, weights=df["pred_ms"].to_numpy(), minlength=n)
        units = np.bincount(nets, minlength=n)
        return self.calibration["scale"] * total + self.calibration["per_unit_ms"] * units

    @classmethod
    def load(cls, path: str | Path, spec: HardwareSpec | None = None) -> "Estimator":
        """Load ``path``; with ``spec``, refuse an estimator trained for another spec."""
        import lightgbm as lgb

        path = Path(path)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise EstimatorError(f"{path}: estimator directory not found; "
                                 f"{retrain(path).replace('retrain it', 'train one')}")
        if not mpath.is_file():
            raise EstimatorError(f"{mpath}: estimator manifest not found")
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, ValueError, RecursionError) as err:  # ValueError: JSON, UTF-8
            raise EstimatorError(f"{mpath}: unreadable manifest: {err}") from None
        check_manifest(manifest, mpath)
        if manifest["backend"] == "sim":
            if spec is None:
                raise EstimatorError(f"{mpath}: a simulator-trained estimator needs its hardware spec")
            if manifest["spec_hash"] != spec.spec_hash():
                raise EstimatorError(
                    f"{mpath}: trained for hardware '{manifest['hardware']}' (spec hash "
                    f"{manifest['spec_hash']}), not '{spec.name}' (spec hash {spec.spec_hash()}); "
                    f"retrain or pass the matching --estimator")
        else:
            spec = None
        files = {kind: _verified(path, entry, kind) for kind, entry in manifest["kinds"].items()}
        models = {}
        for kind, f in files.items():
            try:
                booster = lgb.Booster(model_file=str(f))
            except lgb.basic.LightGBMError as err:
                raise EstimatorError(f"{f}: not a LightGBM model file: {err}") from None
            if booster.feature_name() != manifest["features"]:
                raise EstimatorError(f"{f}: model features differ from the manifest's")
            models[kind] = booster
        return cls(manifest, models, spec, path)

    # ---- prediction ----------------------------------------------------------

    def kernel_frame(self, archs: list[ArchSpec], ops=None) -> pd.DataFrame:
        """Decomposed kernels with a ``pred_ms`` column and an out-of-range flag."""
        df = decompose(archs, self.spec, self.grouping, ops=ops)
        codes = df["kind"].cat.codes.to_numpy()
        x_all = df[self.features].to_numpy(dtype=np.float64)  # log1p'd per distinct row below
        col = {f: df[f].to_numpy() for f in {f for r in self.ranges.values() for f in r}}
        pred = np.full(len(df), np.nan)
        outside = np.zeros(len(df), bool)
        # Identical kernels recur across networks: predict each distinct row once. Rows are
        # keyed by one random projection and checked by a second (a collision in both is
        # practically impossible; then all rows of the kind are predicted).
        proj = np.random.default_rng(0).standard_normal((x_all.shape[1], 2))
        keys = x_all @ proj
        for code, kind in enumerate(df["kind"].cat.categories):
            mask = codes == code
            if not mask.any():
                continue
            if kind not in self.models:
                outside |= mask
                continue
            rows = np.flatnonzero(mask)
            k = keys[rows]
            _, first, inverse = np.unique(k[:, 0], return_index=True, return_inverse=True)
            booster = self.models[kind]
            if np.array_equal(k[first, 1][inverse], k[:, 1]):
                x = _log_rows(x_all[rows[first]])
                pred[rows] = np.exp(booster.predict(x, num_threads=self.threads))[inverse]
            else:  # pragma: no cover - a projection collision
                pred[rows] = np.exp(booster.predict(_log_rows(x_all[rows]), num_threads=self.threads))
            for f, (lo, hi) in self.ranges[kind].items():
                v = col[f][mask]
                outside[mask] |= (v < lo) | (v > hi)
        df["pred_ms"] = pred
        df["out_of_range"] = outside
        return df

    def _reasons(self, df: pd.DataFrame, archs: list[ArchSpec]) -> dict[int, list[str]]:
        reasons: dict[int, list[str]] = {}
        n_units = {i: len(a.blocks) + 2 for i, a in enumerate(archs)}
        for row in df[df["out_of_range"]].itertuples(index=False):
            net = int(row.net)
            where = f"{unit_name(int(row.unit), n_units[net])} ({row.kind})"
            if row.kind not in self.ranges:
                reasons.setdefault(net, []).append(f"{where}: no model for this kernel kind")
                continue
            for f, (lo, hi) in self.ranges[row.kind].items():
                v = getattr(row, f)
                if v < lo:
                    reasons.setdefault(net, []).append(f"{where}: {f}={v:g} below trained min {lo:g}")
                elif v > hi:
                    reasons.setdefault(net, []).append(f"{where}: {f}={v:g} above trained max {hi:g}")
        return reasons

    def predict_latency(self, archs: list[ArchSpec]) -> np.ndarray:
        """Estimated latency (ms) of each network; NaN where a kernel kind has no model."""
        return self._network_latency(self.kernel_frame(archs), len(archs))

    def estimate(self, archs: list[ArchSpec], per_kernel: bool = False) -> list[dict]:
        """One record per network with the keys ``hwnas simulate --json`` prints
        (``name``, ``latency_ms``, ``params_bytes``, ``peak_activation_bytes``...),
        plus ``out_of_range``: the kernels outside the trained ranges (empty if none)."""
        ops = op_table(archs)
        df = self.kernel_frame(archs, ops)
        nets = df["net"].to_numpy()
        latency = self._network_latency(df, len(archs))
        macs = np.bincount(nets, weights=df["macs"].to_numpy(), minlength=len(archs))
        params_b, peak_b = network_memory(archs, self.bytes_per_element, ops)
        reasons = self._reasons(df, archs) if df["out_of_range"].any() else {}
        hw = self.manifest["hardware"]
        records = []
        for i, a in enumerate(archs):
            lat = float(latency[i])
            code = encode(a)
            rec = {"name": a.name or code, "arch": code, "hardware": hw,
                   "estimator": str(self.path),
                   "latency_ms": None if np.isnan(lat) else lat,
                   "macs": int(macs[i]), "flops": int(2 * macs[i]),
                   "params_bytes": int(params_b[i]), "peak_activation_bytes": int(peak_b[i]),
                   "memory_bytes": int(params_b[i] + peak_b[i]),
                   "out_of_range": reasons.get(i, [])}
            records.append(rec)
        if per_kernel:
            for i, part in df.groupby("net"):
                records[int(i)]["kernels"] = [
                    {"unit": unit_name(int(r.unit), len(archs[int(i)].blocks) + 2),
                     "kind": str(r.kind), "latency_ms": float(r.pred_ms),
                     "out_of_range": bool(r.out_of_range)}
                    for r in part.itertuples(index=False)]
        return records
