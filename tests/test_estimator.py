"""The latency estimator: decomposition matches the graph code, microbenchmarks, training,
prediction from saved files alone (simulator unimportable), bad input, out-of-range flags."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from hardware.graph import fuse, residency
from hardware.spec import load_spec
from hwnas.arch import ArchSpec, BlockSpec, ClassificationHead, InputSpec, StemSpec, encode
from hwnas.estimator import Estimator, EstimatorError, LightGBMConfig
from hwnas.estimator.decompose import ROLE_HEAD, decompose, feature_names, network_memory
from hwnas.estimator.microbench import (MicrobenchConfig, MicrobenchError, read_table,
                                        run_microbench)
from hwnas.estimator.scoring import error_metrics
from hwnas.estimator.train import train
from hwnas.lowering import HEAD_OPS, OpSpec, static_cost, to_graph
from hwnas.registry import REFERENCES, reference
from hwnas.space import BASE_STAGES_224, SpaceConfig, curated_space, uncurated_space

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_spec("neural-engine-32")
SPACES = [{"resolution": 32, "in_channels": 1},
          {"resolution": 96, "in_channels": 3, "classes": 2, "stages": 224, "stem_stride": 2}]


def _networks(spec, n=12, seed=3):
    rng = np.random.default_rng(seed)
    big = SpaceConfig(resolution=160, in_channels=3, classes=100, stages=BASE_STAGES_224,
                      stem_stride=2, types=("ibn", "fused_ibn", "conv"), expands=(1, 2, 6))
    archs = [reference(n) for n in REFERENCES]
    for cfg in (SpaceConfig(), big):
        archs += [curated_space(spec, cfg).sample(rng) for _ in range(n // 2)]
        archs += [uncurated_space(cfg).sample(rng) for _ in range(n // 2)]
    return archs


@pytest.mark.parametrize("spec_name", ["neural-engine-32", "neural-engine-64", "edge-16"])
def test_decompose_matches_graph_fusion_and_residency(spec_name):
    """The vectorized decomposition gives the kernels, bytes and memory the graph code does."""
    spec = load_spec(spec_name)
    archs = _networks(spec)
    df = decompose(archs, spec)
    params_b, peak_b = network_memory(archs, spec.bytes_per_element)
    bpe = spec.bytes_per_element
    for n, arch in enumerate(archs):
        g = to_graph(arch)
        ks = fuse(g, spec.fusion)
        res = residency(g, ks, spec)
        rows = df[df["net"] == n]
        assert list(rows["kind"].astype(str)) == [k.kind for k in ks]
        for k, r in zip(ks, rows.itertuples()):
            assert r.macs == sum(op.macs for op in k.ops)
            assert r.weight_bytes == sum(op.params for op in k.ops) * bpe
            assert r.in_bytes == sum(g.tensors[t] for t in k.inputs) * bpe
            assert r.in_dram_bytes == sum(g.tensors[t] for t in k.inputs if t not in res) * bpe
            assert r.out_dram_bytes == sum(g.tensors[t] for t in k.outputs if t not in res) * bpe
        cost = static_cost(arch, bpe, g)
        assert (params_b[n], peak_b[n]) == (cost.params_bytes, cost.peak_activation_bytes)


def test_a_new_head_task_lowers_through_both_paths(monkeypatch):
    """The graph and the vectorized table take a head's ops from the same registry."""
    @dataclass(frozen=True)
    class ToyHead:
        task: ClassVar[str] = "toy"
        classes: int = 5

    monkeypatch.setitem(HEAD_OPS, "toy", lambda head, in_c: (OpSpec("conv", "conv", head.classes),))
    arch = replace(reference("mobilenetv2_32"), head=ToyHead())
    g = to_graph(arch)
    assert g.ops[-1].name == "head.conv" and g.ops[-1].out_c == 5
    df = decompose([arch], SPEC)
    assert list(df["kind"].astype(str)) == [k.kind for k in fuse(g, SPEC.fusion)]
    assert df["macs"].sum() == sum(op.macs for op in g.ops)
    assert df["role"].iloc[-1] == ROLE_HEAD


def test_block_grouping_is_one_row_per_unit():
    arch = reference("mobilenetv2_32")
    df = decompose([arch], None, "block")
    assert len(df) == len(arch.blocks) + 2
    assert "array_util" not in df.columns  # no array terms without a spec
    assert set(feature_names(None)) <= set(df.columns)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny microbenchmark table and the estimator trained on it."""
    cfg = MicrobenchConfig(samples=240, repeats=3, noise=0.03, spaces=SPACES, seed=1,
                           adaptive_share=0.25, time_budget_s=60)
    table = run_microbench(cfg, SPEC)
    root = tmp_path_factory.mktemp("est")
    table.to_parquet(root / "mb.parquet")
    out = root / "neural-engine-32"
    train(table, SPEC, "sim", LightGBMConfig(n_estimators=40, linear_tree=True), out, "test")
    return table, out


def test_microbench_table_keeps_every_repeat(tiny):
    table, _ = tiny
    per = table.groupby(["sample", "kernel_index"]).size()
    assert (per == 3).all()
    assert set(table["source"]) == {"network", "random", "adaptive"}
    assert set(table["round"]) == {1, 2}
    assert table["sample"].nunique() <= 240
    assert (table["latency_ms"] > 0).all()
    # Noise is on: repeats of one kernel differ.
    assert table.groupby(["sample", "kernel_index"])["latency_ms"].std().max() > 0
    # Shapes beyond the array width's multiples are sampled.
    assert (table["in_c"] % 32 != 0).any() and (table["out_c"] % 32 != 0).any()


def test_saved_estimator_files_and_manifest(tiny):
    _, out = tiny
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec_hash"] == SPEC.spec_hash()
    assert manifest["features"] == feature_names(SPEC)
    assert {"lightgbm", "numpy"} <= set(manifest["versions"])
    for kind, entry in manifest["kinds"].items():
        text = (out / entry["file"]).read_text()
        assert text.startswith("tree")  # LightGBM text format, not a pickle
    assert {"conv", "depthwise+conv+add"} <= set(manifest["kinds"])


def test_estimate_records_match_simulate_keys(tiny):
    from hwnas.simulation import simulate_arch

    _, out = tiny
    est = Estimator.load(out, SPEC)
    archs = [reference(n) for n in REFERENCES]
    recs = est.estimate(archs, per_kernel=True)
    for arch, r in zip(archs, recs):
        sim = simulate_arch(arch, SPEC)
        assert {"name", "latency_ms", "params_bytes", "peak_activation_bytes"} <= set(r)
        assert r["params_bytes"] == sim["params_bytes"]
        assert r["peak_activation_bytes"] == sim["peak_activation_bytes"]
        assert 0.5 < r["latency_ms"] / sim["latency_ms"] < 2  # a tiny model, still sane
        assert len(r["kernels"]) == len(sim["kernels"])
    lat = est.predict_latency(archs)
    np.testing.assert_allclose(lat, [r["latency_ms"] for r in recs])


def test_out_of_range_is_flagged_not_silent(tiny):
    _, out = tiny
    est = Estimator.load(out, SPEC)
    huge = ArchSpec(stem=StemSpec(32, 3, 1), input=InputSpec(3, 32, 32),
                    blocks=(BlockSpec("conv", 9, 64, 2),), head=ClassificationHead(0, 10))
    ok = reference("mobilenetv2_32")
    r_huge, r_ok = est.estimate([huge, ok])
    assert r_huge["out_of_range"] and any("kernel=9 above" in s for s in r_huge["out_of_range"])
    assert r_huge["out_of_range"][0].startswith("blocks.0 (conv)")
    assert r_huge["latency_ms"] > 0  # still a number, but flagged
    assert r_ok["out_of_range"] == []


def test_estimator_bad_directories(tiny, tmp_path):
    _, out = tiny
    with pytest.raises(EstimatorError, match="trained for hardware 'neural-engine-32'"):
        Estimator.load(out, load_spec("edge-16"))
    with pytest.raises(EstimatorError, match="not found"):
        Estimator.load(tmp_path / "nowhere", SPEC)
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((out / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EstimatorError, match="model file for kernel kind '.*' is missing"):
        Estimator.load(broken, SPEC)
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(EstimatorError, match="unreadable manifest"):
        Estimator.load(broken, SPEC)


def test_unreadable_benchmark_table(tmp_path):
    bad = tmp_path / "t.parquet"
    bad.write_bytes(b"definitely not parquet")
    with pytest.raises(MicrobenchError, match="not a readable parquet table"):
        read_table(bad)
    with pytest.raises(MicrobenchError, match="not found"):
        read_table(tmp_path / "missing.parquet")
    pd.DataFrame({"sample": [1]}).to_parquet(tmp_path / "cols.parquet")
    with pytest.raises(MicrobenchError, match="lacks column 'kind'"):
        read_table(tmp_path / "cols.parquet")


BLOCKED = """
import sys
sys.modules['hardware.simulator'] = None  # any import of it now raises ImportError
try:
    import hardware.simulator
    raise SystemExit('simulator import was not blocked')
except ImportError:
    pass
from typer.testing import CliRunner
from hwnas.cli import app
r = CliRunner().invoke(app, ['estimate', '--estimator', sys.argv[1], '--arch', '-', '--json'],
                       input='mobilenetv2_32\\n' + sys.argv[2] + '\\n')
assert r.exit_code == 0, r.output
print(r.output)
assert 'hardware.simulator' not in {m for m, v in sys.modules.items() if v is not None}
"""


def test_estimate_runs_with_the_simulator_unimportable(tiny):
    _, out = tiny
    arch = encode(reference("tiny_conv_32"))
    p = subprocess.run([sys.executable, "-c", BLOCKED, str(out), arch], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert [r["name"] for r in lines] == ["mobilenetv2_32", "tiny_conv_32"]
    assert all(r["latency_ms"] > 0 for r in lines)


def test_cli_estimate_bad_input(tiny):
    from typer.testing import CliRunner

    from hwnas.cli import app

    _, out = tiny
    runner = CliRunner()
    for args, needle in [
        (["estimate", "--estimator", str(out), "--hardware", "edge-16", "--arch", "tiny_conv_32"],
         "trained for hardware"),
        (["estimate", "--estimator", str(out / "nope"), "--arch", "tiny_conv_32"], "not found"),
        (["estimate", "--estimator", str(out), "--arch", "{bad json"], "malformed JSON"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stdout == ""
        assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_calibration_fits_network_overhead():
    """Whole-network latency = scale * sum of units + per-unit overhead, fitted by least squares."""
    from hwnas.estimator.model import fit_calibration

    class Fixed:  # a "model" predicting 1 ms per unit
        def predict(self, x, **kw):
            return np.zeros(len(x))

    archs = [reference(n) for n in REFERENCES]
    df = decompose(archs, None, "block")
    units = np.bincount(df["net"])
    frame = pd.DataFrame({"kind": "network", "arch": [encode(a) for a in archs],
                          "latency_ms": 1.2 * units + 0.05 * units})
    models = {k: Fixed() for k in df["kind"].astype(str).unique()}
    cal = fit_calibration(frame, models, feature_names(None), "block", None)
    assert cal["scale"] + cal["per_unit_ms"] == pytest.approx(1.25)
    assert cal["rmspe_after"] < 1e-9


def test_error_metrics():
    m = error_metrics(np.array([1.0, 2.08, 3.5]), np.array([1.0, 2.0, 3.0]))
    assert m["within_5pct"] == pytest.approx(2 / 3) and m["within_10pct"] == pytest.approx(2 / 3)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["rmspe"] == pytest.approx(np.sqrt((0 + 0.04 ** 2 + (0.5 / 3) ** 2) / 3))


def test_train_estimator_refuses_a_table_from_another_spec(tiny, tmp_path):
    from typer.testing import CliRunner

    from hwnas.cli import app

    _, out = tiny
    result = CliRunner().invoke(app, ["train-estimator", "--table", str(out.parent / "mb.parquet"),
                                      "--hardware", "edge-16", "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "spec_rows=32, but edge-16 has 16" in result.stderr
    assert not (tmp_path / "e").exists()
