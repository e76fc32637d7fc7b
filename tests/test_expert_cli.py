"""`hwnas expert`: rules judged by a (tiny, freshly trained) latency estimator."""
import json

import pytest
from typer.testing import CliRunner

from hardware.spec import load_spec
from hwnas.arch import from_json
from hwnas.cli import app
from hwnas.estimator import LightGBMConfig
from hwnas.estimator.microbench import MicrobenchConfig, run_microbench
from hwnas.estimator.train import train
from hwnas.expert import FuseIBN, rule_to_json

SPEC = load_spec("neural-engine-32")
runner = CliRunner()


@pytest.fixture(scope="module")
def estimator_dir(tmp_path_factory):
    cfg = MicrobenchConfig(samples=240, repeats=2, noise=0.02, seed=2, time_budget_s=60,
                           spaces=[{"resolution": 224, "in_channels": 3, "classes": 1000,
                                    "stages": 224, "stem_stride": 2}])
    out = tmp_path_factory.mktemp("est") / SPEC.name
    train(run_microbench(cfg, SPEC), SPEC, "sim", LightGBMConfig(n_estimators=40), out, "test")
    return out


def test_expert_reports_each_rule_and_writes_the_architecture(estimator_dir, tmp_path):
    out = tmp_path / "arch.json"
    result = runner.invoke(app, ["expert", "--arch", "mobilenetv2_224", "--estimator",
                                 str(estimator_dir), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rules = [next(iter(r["rule"])) for r in report["rules"]]
    assert rules == ["fuse_ibn", "replace_depthwise", "align_channels", "even_channels",
                     "pin_block_type"]
    fuse = report["rules"][0]
    assert fuse["kept"] and fuse["latency_gain"] > 0.05
    assert all(r["latency_ms"] > 0 for r in report["rules"])
    arch = from_json(out.read_text())
    assert arch.encode() == report["arch"]
    assert any(b.type == "fused_ibn" for b in arch.blocks)


def test_expert_rules_file_and_learned_rules(estimator_dir, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("- fuse_ibn: {min_scale: 0.1}\n- align_channels: {multiple: 32}\n")
    result = runner.invoke(app, ["expert", "--arch", "mobilenetv2_224", "--estimator",
                                 str(estimator_dir), "--rules", str(rules), "--keep-all",
                                 "--out", str(tmp_path / "a.json")])
    assert result.exit_code == 0, result.output
    assert "align_channels" in result.stdout and "lower than the baseline" in result.stdout
    fused = tmp_path / "pareto.json"
    searched = from_json((tmp_path / "a.json").read_text())
    fused.write_text(json.dumps({"pareto": [{"arch": searched.encode()}]}))
    result = runner.invoke(app, ["expert", "--arch", "mobilenetv2_224", "--estimator",
                                 str(estimator_dir), "--learn-from", str(fused), "--json",
                                 "--out", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "pin_block_type" in json.dumps(json.loads(result.stdout)["rules"])


@pytest.mark.parametrize("args, message", [
    (["--arch", "mobilenetv2_224", "--estimator", "/nonexistent"], "estimator directory not found"),
    (["--arch", "nope"], "is not a file"),
])
def test_expert_bad_input(estimator_dir, args, message):
    if "--estimator" not in args:
        args = args + ["--estimator", str(estimator_dir)]
    result = runner.invoke(app, ["expert", *args])
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_bad_pareto_file(estimator_dir, tmp_path):
    bad = tmp_path / "pareto.json"
    bad.write_text('["not", "a", "pareto file"]')
    result = runner.invoke(app, ["expert", "--arch", "mobilenetv2_224", "--estimator",
                                 str(estimator_dir), "--learn-from", str(bad)])
    assert result.exit_code == 2 and "expected a JSON object" in result.stderr


def test_bad_rules_file(estimator_dir, tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("- make_it_fast: {}\n")
    result = runner.invoke(app, ["expert", "--arch", "mobilenetv2_224", "--estimator",
                                 str(estimator_dir), "--rules", str(bad)])
    assert result.exit_code == 2 and "unknown rule 'make_it_fast'" in result.stderr


def test_rule_json_round_trip():
    assert rule_to_json(FuseIBN(0.25)) == {"fuse_ibn": {"min_scale": 0.25}}
