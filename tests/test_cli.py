"""The CLI contract: ARCH forms, JSON keys, and bad input -> one stderr line, exit 2, no stdout."""
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from hwnas.arch import encode
from hwnas.cli import app
from hwnas.registry import reference

runner = CliRunner()
ARCH = reference("tiny_conv_32")
KEYS = {"name", "latency_ms", "cycles", "energy_mj", "params_bytes", "peak_activation_bytes",
        "kernels"}


def run(*args, input=None):
    return runner.invoke(app, list(args), input=input)


def test_every_command_has_help():
    for cmd in ([], ["simulate"], ["references"], ["specs"], ["sample"]):
        result = run(*cmd, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


@pytest.mark.parametrize("form", ["file", "inline", "string", "reference"])
def test_simulate_arch_forms(tmp_path, form):
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(ARCH.to_json()))
    arg = {"file": str(path), "inline": json.dumps(ARCH.to_json()),
           "string": encode(ARCH), "reference": "tiny_conv_32"}[form]
    result = run("simulate", "--hardware", "neural-engine-32", "--arch", arg, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert KEYS <= set(record) and record["name"] == "tiny_conv_32"
    assert record["latency_ms"] > 0 and record["kernels"][0]["cycles"] > 0


def test_long_architecture_strings_are_not_mistaken_for_files():
    text = encode(reference("mobilenetv2_224"))
    assert len(text) > 255
    result = run("simulate", "--arch", text, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["name"] == "mobilenetv2_224"


def test_stdin_batch_one_line_per_input():
    lines = [encode(ARCH), json.dumps(reference("mobilenetv2_32").to_json()), encode(ARCH)]
    result = run("simulate", "--arch", "-", "--json", input="\n".join(lines) + "\n")
    assert result.exit_code == 0
    out = [json.loads(x) for x in result.stdout.splitlines()]
    assert [r["name"] for r in out] == ["tiny_conv_32", "mobilenetv2_32", "tiny_conv_32"]


def test_simulate_one_kernel():
    op = '{"op": "conv", "height": 56, "width": 56, "in": 64, "out": 64, "kernel": 3, "stride": 1}'
    result = run("simulate", "--hardware", "neural-engine-32", "--op", op, "--json")
    record = json.loads(result.stdout)
    assert record["compute_cycles"] == 98 * 2 * (576 + 62)
    assert {"compute_cycles", "cycles", "latency_ms"} <= set(record)
    for kind in ("depthwise", "fc", "add", "pool"):
        op = json.dumps({"op": kind, "height": 14, "width": 14, "in": 96, "out": 96, "kernel": 3})
        assert json.loads(run("simulate", "--op", op, "--json").stdout)["cycles"] > 0


@pytest.mark.parametrize("args, message", [
    (["--arch", "{bad json"], "malformed JSON"),
    (["--arch", "no_such_file.json"], "is not a file"),
    (["--arch", '{"stem": {"out": 8}, "blocks": [{"type": "ibn", "kernel": 4, "out": 8}],'
               ' "head": {"task": "classification", "classes": 2}}'], "blocks[0].kernel"),
    (["--hardware", "nope", "--arch", "tiny_conv_32"], "nope.yaml: hardware spec not found"),
    (["--op", '{"op": "conv", "height": 0, "width": 5, "in": 3, "out": 3}'], "'height'"),
    (["--op", '{"op": "softmax"}'], "field 'op'"),
    ([], "exactly one of --arch or --op"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(args, message):
    result = run("simulate", *args, "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_option_errors_exit_2_without_output():
    result = run("simulate", "--arch", "tiny_conv_32", "--noise", "0.1", "--seed", "-1")
    assert result.exit_code == 2 and result.stdout == "" and "--seed" in result.stderr


def test_bad_stdin_line_writes_nothing():
    result = run("simulate", "--arch", "-", "--json", input=encode(ARCH) + "\n{oops\n")
    assert result.exit_code == 2 and result.stdout == ""
    assert "stdin line 2" in result.stderr


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "hwnas.cli", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and "simulate" in out.stdout


def test_references_and_sample():
    table = run("references", "--json")
    rows = json.loads(table.stdout)
    assert {r["name"] for r in rows} >= {"mobilenetv2_224", "mobilenetv2_32"}
    sampled = run("sample", "-n", "3", "--seed", "1").stdout.split()
    assert len(sampled) == 3 and sampled == run("sample", "-n", "3", "--seed", "1").stdout.split()
