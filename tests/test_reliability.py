"""Hostile input to the real ``hwnas`` command: each case exits 2 with one line on stderr,
no traceback, nothing on stdout and nothing written in the working folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas import layout

HWNAS = str(Path(sys.executable).parent / "hwnas")
ROOT = Path(__file__).resolve().parents[1]
TINY = "i1x32x32-stem_k3_c32_s1-conv_k3_c32_s1-cls_f0_n10"


def _deep_json(depth: int = 20_000) -> str:
    return '{"a":' * depth + "1" + "}" * depth


CASES = {  # name: (argv, stdin bytes, files to create, words the message must hold)
    "binary file as --arch": (["simulate", "--arch", "bin.json"], b"", {"bin.json": bytes(range(256)) * 8},
                              ["bin.json", "cannot read as text"]),
    "empty stdin": (["simulate", "--arch", "-"], b"", {}, ["stdin", "no architecture"]),
    "blank stdin lines": (["simulate", "--arch", "-"], b"\n\n  \n", {}, ["stdin", "no architecture"]),
    "binary stdin": (["simulate", "--arch", "-"], b"\xff\xfe\x00garbage\n", {}, ["stdin line 1"]),
    "JSON nested 20,000 deep": (["simulate", "--arch", _deep_json()], b"", {}, ["nested too deeply"]),
    "JSON file nested 20,000 deep": (["simulate", "--arch", "deep.json"], b"",
                                     {"deep.json": _deep_json().encode()}, ["deep.json", "nested too deeply"]),
    "10 MB bad stdin line": (["simulate", "--arch", "-"], b"x" * 10_000_000 + b"\n", {}, ["stdin line 1"]),
    "noise nan": (["simulate", "--noise", "nan", "--arch", TINY], b"", {}, ["--noise"]),
    "noise inf": (["simulate", "--noise", "inf", "--arch", TINY], b"", {}, ["--noise"]),
    "noise negative": (["simulate", "--noise", "-0.1", "--arch", TINY], b"", {}, ["--noise"]),
    "unknown spec": (["simulate", "--hardware", "warp-drive", "--arch", TINY], b"", {}, ["warp-drive"]),
    "malformed --op": (["simulate", "--op", "{bad"], b"", {}, ["--op"]),
    "estimate without an estimator": (["estimate", "--arch", TINY], b"", {}, ["estimator"]),
    "estimate on empty stdin": (["estimate", "--arch", "-"], b"", {}, ["estimator"]),
    "lineage without a store": (["lineage", "0123abcd"], b"", {}, ["mlflow.db", "no MLflow store"]),
    "schedule without a Prefect server": (["schedule", "--cron", "0 3 * * *"], b"", {},
                                          ["Prefect server", "PREFECT_API_URL"]),
    "run an unknown stage": (["run", "--stage", "nosuch"], b"", {"params.yaml": None, "dvc.yaml": None},
                             ["unknown stage 'nosuch'"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_input_is_one_line_exit_2(name, tmp_path):
    argv, stdin, files, words = CASES[name]
    for fname, content in files.items():
        (tmp_path / fname).write_bytes(content if content is not None
                                       else (ROOT / fname).read_bytes())
    before = sorted(p.name for p in tmp_path.iterdir())
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run([HWNAS, *argv], input=stdin, cwd=tmp_path, capture_output=True,
                          timeout=120, env=env)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, (proc.returncode, err[-2000:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert len(lines[0]) < 600 and "Traceback" not in err
    assert all(w in lines[0] for w in words), lines[0]
    assert proc.stdout == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


# ---- in-process cases: the same checks through CliRunner, a few ms each ------------------

SPEC_YAML = (ROOT / "hardware/specs/edge-16.yaml").read_text()
GOOD_JSON = ('{"input": {"channels": 3, "height": 32, "width": 32}, "stem": {"out": 16, '
             '"kernel": 3, "stride": 1}, "blocks": [%s], "head": {"task": "classification", '
             '"features": 0, "classes": 10}}')
DIR = object()          # a folder where a file is expected
EST = "est"             # the tiny estimator, copied here for the case
OLD = b"previous output, must survive\n"


def _spec(**fields) -> bytes:
    """edge-16 with some fields replaced (raw YAML values)."""
    lines = [ln for ln in SPEC_YAML.splitlines() if ln.split(":")[0] not in fields]
    return ("\n".join(lines + [f"{k}: {v}" for k, v in fields.items()]) + "\n").encode()


def _arch(*blocks: str, **top) -> str:
    text = GOOD_JSON % ", ".join(blocks)
    for key, value in top.items():  # e.g. input='{"height": 10}' replaces the input object
        text = text.replace(f'"{key}": ', f'"{key}": {value}, "_{key}": ', 1)
    return text.replace(', "_input": {"channels": 3, "height": 32, "width": 32}', "")


def _manifest(edit):
    """A setup that rewrites the estimator's manifest with ``edit(manifest)``."""
    def setup(root: Path):
        path = root / EST / "manifest.json"
        m = json.loads(path.read_text())
        m = edit(m) or m
        path.write_text(json.dumps(m))
    return setup


def _model(edit):
    """A setup that rewrites the first model file's bytes with ``edit(bytes)``."""
    def setup(root: Path):
        m = json.loads((root / EST / "manifest.json").read_text())
        f = root / EST / next(iter(m["kinds"].values()))["file"]
        data = edit(f.read_bytes())
        if data is DIR:
            f.unlink()
            f.mkdir()
        else:
            f.write_bytes(data)
    return setup


def _set(path: str, value):
    def edit(m):
        *keys, last = path.split(".")
        d = m
        for k in keys:
            d = d[k] if k != "*" else next(iter(d.values()))
        d[last] = value
    return edit


def _first_kind(key, value):
    def edit(m):
        next(iter(m["kinds"].values()))[key] = value
    return edit


def _drop_checksums(m):
    m["format"] = 1
    for e in m["kinds"].values():
        e.pop("sha256"), e.pop("bytes")


ESTIMATE = ["estimate", "--estimator", EST, "--arch", "tiny_conv_32"]
EXPERT = ["expert", "--estimator", EST, "--arch", "tiny_conv_32", "--out", "out.json"]
PARAMS = (ROOT / "params.yaml").read_bytes()
MB = ["microbench", "--samples", "2", "--time-budget", "5"]
SQLITE_GARBAGE = b"SQLite format 3\x00" + bytes(range(256)) * 40

# name: dict(argv, stdin, files {name: bytes | DIR}, words, setup, out, fault, env)
#   out: a file the command would write; it exists before (OLD) and must be byte-identical
#   fault: an errno that os.replace raises (a full disk or read-only folder at the rename)
IN_PROCESS = {
    # architectures: limits and types, named by field
    "resolution 10^20": dict(argv=["simulate", "--arch", "i3x100000000000000000000x32-stem_k3_c8_s1-cls_f0_n10"],
                             words=["input.height", "out of range"]),
    "resolution 5000": dict(argv=["simulate", "--arch", "i3x5000x5000-stem_k3_c8_s1-cls_f0_n10"],
                            words=["input.height", "4096"]),
    "1e9 stem channels": dict(argv=["simulate", "--arch", "i3x32x32-stem_k3_c1000000000_s1-cls_f0_n10"],
                              words=["stem.out", "65536"]),
    "block out 70000": dict(argv=["simulate", "--arch", _arch('{"type": "conv", "kernel": 3, "out": 70000}')],
                            words=["blocks[0].out"]),
    "expanded width 262144": dict(argv=["simulate", "--arch", "i3x32x32-stem_k3_c4096_s1-ibn_k3_e64_c32_s1-cls_f0_n10"],
                                  words=["blocks[0].expand", "expanded width"]),
    "kernel 33": dict(argv=["simulate", "--arch", _arch('{"type": "conv", "kernel": 33, "out": 8}')],
                      words=["blocks[0].kernel", "31"]),
    "even kernel": dict(argv=["simulate", "--arch", _arch('{"type": "conv", "kernel": 4, "out": 8}')],
                        words=["blocks[0].kernel", "odd"]),
    "stride 3": dict(argv=["simulate", "--arch", _arch('{"type": "conv", "kernel": 3, "out": 8, "stride": 3}')],
                     words=["blocks[0].stride"]),
    "600 blocks": dict(argv=["simulate", "--arch", _arch(*['{"type": "conv", "kernel": 1, "out": 8}'] * 600)],
                       words=["blocks", "512"]),
    "a million classes": dict(argv=["simulate", "--arch", "i3x32x32-stem_k3_c8_s1-cls_f0_n1000000"],
                              words=["head.classes"]),
    "13-digit channel field": dict(argv=["simulate", "--arch", "i3x32x32-stem_k3_c8_s1-conv_k3_c9999999999999_s1-cls_f0_n10"],
                                   words=["cannot parse"]),
    "NaN expand": dict(argv=["simulate", "--arch", _arch('{"type": "ibn", "kernel": 3, "out": 8, "expand": NaN}')],
                       words=["blocks[0].expand"]),
    "Infinity expand": dict(argv=["simulate", "--arch", _arch('{"type": "ibn", "kernel": 3, "out": 8, "expand": Infinity}')],
                            words=["blocks[0].expand"]),
    "fractional height": dict(argv=["simulate", "--arch", _arch(input='{"height": 32.5}')], words=["input.height"]),
    "string height": dict(argv=["simulate", "--arch", _arch(input='{"height": "32"}')], words=["input.height"]),
    "boolean out": dict(argv=["simulate", "--arch", _arch('{"type": "conv", "kernel": 3, "out": true}')],
                        words=["blocks[0].out"]),
    "negative out": dict(argv=["simulate", "--arch", _arch('{"type": "conv", "kernel": 3, "out": -8}')],
                         words=["blocks[0].out"]),
    "unknown block type": dict(argv=["simulate", "--arch", _arch('{"type": "lstm", "kernel": 3, "out": 8}')],
                               words=["blocks[0].type"]),
    "unknown arch field": dict(argv=["simulate", "--arch", _arch('{"type": "conv", "kernel": 3, "out": 8, "dilation": 2}')],
                               words=["unknown field 'dilation'"]),
    "blocks not a list": dict(argv=["simulate", "--arch", _arch().replace('"blocks": []', '"blocks": 7')],
                              words=["blocks"]),
    "name with a space": dict(argv=["simulate", "--arch", _arch().replace("{", '{"name": "a b", ', 1)],
                              words=["name"]),
    "strides past the input": dict(argv=["simulate", "--arch", "i3x2x2-stem_k3_c8_s2-conv_k3_c8_s2-conv_k3_c8_s2-cls_f0_n10"],
                                   words=["blocks[0].stride", "too small"]),
    "unknown reference": dict(argv=["simulate", "--arch", "resnet9000"], words=["resnet9000"]),
    "arch file is empty": dict(argv=["simulate", "--arch", "empty.json"], files={"empty.json": b""},
                               words=["empty.json", "malformed JSON"]),
    "arch file is a list": dict(argv=["simulate", "--arch", "list.json"], files={"list.json": b"[1, 2]"},
                                words=["list.json", "must be an object"]),
    "arch file is Latin-1": dict(argv=["simulate", "--arch", "l1.json"], files={"l1.json": b'{"name": "caf\xe9"}'},
                                 words=["l1.json", "cannot read as text"]),
    "arch is a folder": dict(argv=["simulate", "--arch", "adir"], files={"adir": DIR}, words=["adir"]),
    "stdin line 2 bad": dict(argv=["simulate", "--arch", "-"], stdin=TINY + "\nnot-an-arch\n",
                             words=["stdin line 2"]),
    # --op
    "op height 10^18": dict(argv=["simulate", "--op", '{"op": "conv", "height": 1000000000000000000, "width": 8, "in": 3, "out": 8}'],
                            words=["'height'", "4096"]),
    "op 1e9 channels": dict(argv=["simulate", "--op", '{"op": "conv", "height": 8, "width": 8, "in": 1000000000, "out": 8}'],
                            words=["'in'", "65536"]),
    "op even kernel": dict(argv=["simulate", "--op", '{"op": "conv", "height": 8, "width": 8, "in": 3, "out": 8, "kernel": 4}'],
                           words=["'kernel'"]),
    "op unknown kind": dict(argv=["simulate", "--op", '{"op": "lstm"}'], words=["'op'"]),
    "op is a list": dict(argv=["simulate", "--op", "[1]"], words=["--op", "JSON object"]),
    "op boolean height": dict(argv=["simulate", "--op", '{"op": "conv", "height": true, "width": 8, "in": 3, "out": 8}'],
                              words=["'height'"]),
    "op unknown field": dict(argv=["simulate", "--op", '{"op": "conv", "colour": 1}'], words=["unknown field 'colour'"]),
    "op float in": dict(argv=["simulate", "--op", '{"op": "fc", "in": 3.5, "out": 8}'], words=["'in'"]),
    # options
    "noise 1.5": dict(argv=["simulate", "--noise", "1.5", "--arch", TINY], words=["--noise"]),
    "noise not a number": dict(argv=["simulate", "--noise", "lots", "--arch", TINY], words=["--noise"]),
    "negative seed": dict(argv=["simulate", "--seed", "-1", "--arch", TINY], words=["--seed"]),
    "seed 2^40": dict(argv=["simulate", "--seed", str(2**40), "--arch", TINY], words=["--seed"]),
    "both --arch and --op": dict(argv=["simulate", "--arch", TINY, "--op", "{}"], words=["exactly one"]),
    "neither --arch nor --op": dict(argv=["simulate"], words=["exactly one"]),
    "unknown command": dict(argv=["simulat"], words=["No such command", "simulat"]),
    "unknown option": dict(argv=["simulate", "--colour"], words=["--colour"]),
    "missing --arch": dict(argv=["estimate"], words=["--arch"]),
    "unknown experiment": dict(argv=["experiment", "nosuch"], words=["nosuch"]),
    # hardware specs
    "spec sram .inf": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY], files={"s.yaml": _spec(sram_kib=".inf")},
                           words=["s.yaml", "sram_kib"]),
    "spec bandwidth 5e-324": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY],
                                  files={"s.yaml": _spec(dram_bandwidth_gb_s="5e-324")},
                                  words=["s.yaml", "dram_bandwidth_gb_s"]),
    "spec clock nan": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY], files={"s.yaml": _spec(clock_mhz=".nan")},
                           words=["s.yaml", "clock_mhz"]),
    "spec energy nan": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY],
                            files={"s.yaml": _spec(energy="{mac_pj: .nan, sram_byte_pj: 1, dram_byte_pj: 1}")},
                            words=["s.yaml", "energy.mac_pj"]),
    "spec 10^9 array rows": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY],
                                 files={"s.yaml": _spec(mac_array="{rows: 1000000000, cols: 16}")},
                                 words=["s.yaml", "mac_array.rows"]),
    "spec negative launch overhead": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY],
                                          files={"s.yaml": _spec(launch_overhead_cycles=-1)},
                                          words=["s.yaml", "launch_overhead_cycles"]),
    "spec name an absolute path": dict(argv=["microbench", "-H", "s.yaml"], files={"s.yaml": _spec(name="/tmp/evil"),
                                                                               "params.yaml": PARAMS},
                                       words=["s.yaml", "'name'"]),
    "spec name with ..": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY], files={"s.yaml": _spec(name="../../x")},
                              words=["s.yaml", "'name'"]),
    "spec unknown field": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY], files={"s.yaml": _spec(turbo=1)},
                               words=["s.yaml", "turbo", "unknown field"]),
    "spec is binary": dict(argv=["simulate", "-H", "bin.yaml", "--arch", TINY], files={"bin.yaml": bytes(range(256))},
                           words=["bin.yaml", "cannot read as text"]),
    "spec is not YAML": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY], files={"s.yaml": b"name: [unclosed\n"},
                             words=["s.yaml", "not valid YAML"]),
    "spec is a list": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY], files={"s.yaml": b"- 1\n- 2\n"},
                           words=["s.yaml", "mapping"]),
    "spec is empty": dict(argv=["simulate", "-H", "s.yaml", "--arch", TINY], files={"s.yaml": b""},
                          words=["s.yaml", "mapping"]),
    "spec is a folder": dict(argv=["simulate", "-H", "specdir", "--arch", TINY], files={"specdir": DIR},
                             words=["specdir"]),
    "references on a bad spec": dict(argv=["references", "-H", "s.yaml"], files={"s.yaml": _spec(sram_kib=".inf")},
                                     words=["s.yaml", "sram_kib"]),
    "sample on an unknown spec": dict(argv=["sample", "-H", "warp-9"], words=["warp-9"]),
    "sample -n 0": dict(argv=["sample", "-n", "0"], words=["-n"]),
    "sample -n 10^7": dict(argv=["sample", "-n", "10000000"], words=["-n"]),
    # estimator directories
    "manifest kinds is a list": dict(argv=ESTIMATE, setup=_manifest(_set("kinds", [])),
                                     words=["manifest.json", "'kinds'"]),
    "manifest not JSON": dict(argv=ESTIMATE, files={"est/manifest.json": b"{not json"},
                              words=["manifest.json", "unreadable manifest"]),
    "manifest binary": dict(argv=ESTIMATE, files={"est/manifest.json": bytes(range(256))},
                            words=["manifest.json", "unreadable manifest"]),
    "manifest a JSON list": dict(argv=ESTIMATE, files={"est/manifest.json": b"[]"}, words=["manifest.json"]),
    "manifest without checksums": dict(argv=ESTIMATE, setup=_manifest(_drop_checksums),
                                       words=["manifest.json", "retrain"]),
    "manifest lacks sha256": dict(argv=ESTIMATE, setup=_manifest(lambda m: _first_kind("sha256", None)(m)),
                                  words=["manifest.json", "sha256"]),
    "manifest file escapes the folder": dict(argv=ESTIMATE, setup=_manifest(_first_kind("file", "../../etc/passwd")),
                                             words=["manifest.json", ".file"]),
    "manifest calibration NaN": dict(argv=ESTIMATE, setup=_manifest(_set("calibration", {"scale": float("nan"),
                                                                                         "per_unit_ms": 0})),
                                     words=["manifest.json", "calibration"]),
    "manifest features empty": dict(argv=ESTIMATE, setup=_manifest(_set("features", [])),
                                    words=["manifest.json", "'features'"]),
    "manifest backend gpu": dict(argv=ESTIMATE, setup=_manifest(_set("backend", "gpu")),
                                 words=["manifest.json", "'backend'"]),
    "manifest lacks hardware": dict(argv=ESTIMATE, setup=_manifest(lambda m: m.pop("hardware") and None),
                                    words=["manifest.json", "'hardware'"]),
    "model file same size, other bytes": dict(argv=ESTIMATE, setup=_model(lambda b: b[::-1]),
                                              words=[".txt", "checksum mismatch"]),
    "model file empty": dict(argv=ESTIMATE, setup=_model(lambda b: b""), words=[".txt", "checksum mismatch"]),
    "model file a folder": dict(argv=ESTIMATE, setup=_model(lambda b: DIR), words=[".txt", "missing"]),
    "estimator is a file": dict(argv=["estimate", "--estimator", "f", "--arch", TINY], files={"f": b"x"},
                                words=["f: estimator directory not found"]),
    "estimator for another spec": dict(argv=ESTIMATE + ["-H", "edge-16"], words=["trained for hardware"]),
    "estimate a too large arch": dict(argv=["estimate", "--estimator", EST, "--arch",
                                            "i3x8192x32-stem_k3_c8_s1-cls_f0_n10"], words=["input.height"]),
    # expert
    "expert rules binary": dict(argv=EXPERT + ["--rules", "r.yaml"], files={"r.yaml": bytes(range(256))},
                                words=["r.yaml", "cannot read"], out="out.json"),
    "expert rules not YAML": dict(argv=EXPERT + ["--rules", "r.yaml"], files={"r.yaml": b"[{fuse_ibn: "},
                                  words=["r.yaml", "not valid YAML"], out="out.json"),
    "expert rules a number": dict(argv=EXPERT + ["--rules", "r.yaml"], files={"r.yaml": b"5\n"},
                                  words=["r.yaml", "list of rules"], out="out.json"),
    "expert unknown rule": dict(argv=EXPERT + ["--rules", "r.yaml"], files={"r.yaml": b"[{warp: {}}]"},
                                words=["r.yaml", "unknown rule 'warp'"], out="out.json"),
    "expert rule bad argument": dict(argv=EXPERT + ["--rules", "r.yaml"],
                                     files={"r.yaml": b"[{align_channels: {multiple: 0, colour: 1}}]"},
                                     words=["r.yaml", "rules[0].align_channels"], out="out.json"),
    "expert rules a folder": dict(argv=EXPERT + ["--rules", "rdir"], files={"rdir": DIR}, words=["rdir"],
                                  out="out.json"),
    "expert learn-from missing": dict(argv=EXPERT + ["--learn-from", "p.json"], words=["p.json", "not found"],
                                      out="out.json"),
    "expert learn-from not JSON": dict(argv=EXPERT + ["--learn-from", "p.json"], files={"p.json": b"{"},
                                       words=["p.json"], out="out.json"),
    "expert learn-from a bad arch": dict(argv=EXPERT + ["--learn-from", "p.json"],
                                         files={"p.json": b'{"pareto": [{"arch": "i3x1x1-nonsense"}]}'},
                                         words=["p.json", "pareto[0].arch"], out="out.json"),
    "expert learn-from empty pareto": dict(argv=EXPERT + ["--learn-from", "p.json"], files={"p.json": b'{"pareto": []}'},
                                           words=["p.json", "empty"], out="out.json"),
    "expert learn-from pareto not a list": dict(argv=EXPERT + ["--learn-from", "p.json"],
                                                files={"p.json": b'{"pareto": 3}'}, words=["p.json", "'pareto'"],
                                                out="out.json"),
    "expert without an estimator": dict(argv=EXPERT[:1] + EXPERT[3:], words=["estimator"], out="out.json"),
    "expert --out a folder": dict(argv=EXPERT[:-1] + ["odir"], files={"odir": DIR}, words=["odir", "cannot write"]),
    "expert --out /dev/full": dict(argv=EXPERT[:-1] + ["/dev/full"], words=["/dev/full", "No space left"]),
    "expert --out on a read-only folder": dict(argv=EXPERT, fault=30, words=["out.json", "Read-only"], out="out.json"),
    "expert --out on a full disk": dict(argv=EXPERT, fault=28, words=["out.json", "No space left"], out="out.json"),
    # microbench and train-estimator
    "microbench backend gpu": dict(argv=["microbench", "--backend", "gpu"], files={"params.yaml": PARAMS},
                                   words=["--backend"]),
    # scenes (the detection task's data)
    "scenes unknown setting": dict(argv=["scenes", "--out", "o", "--config", "s.yaml"],
                                   files={"s.yaml": b"countz: 3\n"}, words=["s.yaml", "countz"]),
    "scenes resolution too large": dict(argv=["scenes", "--out", "o", "--resolution", "5000"],
                                        words=["resolution"]),
    "scenes settings not a mapping": dict(argv=["scenes", "--out", "o", "--config", "s.yaml"],
                                          files={"s.yaml": b"- 1\n"}, words=["s.yaml"]),
    "scenes --out a folder of other things": dict(argv=["scenes", "--out", "d"], files={"d/x.parquet": b"1"},
                                                  words=["--out", "d", "stats.json"], out="d/x.parquet"),
    "scenes --out the root": dict(argv=["scenes", "--out", "/"], words=["--out"]),
    "scenes unknown classes": dict(argv=["scenes", "--out", "o", "--classes", "cats"],
                                   words=["classes"]),
    "microbench --out not parquet": dict(argv=MB + ["--out", "t.csv"], files={"params.yaml": PARAMS},
                                         words=["--out", "t.csv", "Parquet"]),
    "microbench time budget nan": dict(argv=MB[:3] + ["--time-budget", "nan"], files={"params.yaml": PARAMS},
                                       words=["--time-budget"]),
    "microbench time budget inf": dict(argv=MB[:3] + ["--time-budget", "inf"], files={"params.yaml": PARAMS},
                                       words=["--time-budget"]),
    "microbench time budget negative": dict(argv=MB[:3] + ["--time-budget", "-5"], files={"params.yaml": PARAMS},
                                            words=["--time-budget"]),
    "microbench samples 0": dict(argv=["microbench", "--samples", "0"], files={"params.yaml": PARAMS},
                                 words=["--samples"]),
    "microbench params missing": dict(argv=["microbench", "--params", "nope.yaml"], words=["nope.yaml"]),
    "microbench params binary": dict(argv=["microbench", "--params", "p.yaml"], files={"p.yaml": b"\xff\xfe\x00"},
                                     words=["p.yaml"]),
    "microbench params a list": dict(argv=["microbench", "--params", "p.yaml"], files={"p.yaml": b"- 1\n"},
                                     words=["p.yaml"]),
    "microbench --out /dev/full": dict(argv=MB + ["--out", "/dev/full"], files={"params.yaml": PARAMS},
                                       words=["/dev/full", "No space left"]),
    "microbench --out permission denied": dict(argv=MB + ["--out", "t.parquet"], files={"params.yaml": PARAMS},
                                               fault=13, words=["t.parquet", "Permission denied"], out="t.parquet"),
    "train-estimator table missing": dict(argv=["train-estimator", "--table", "no.parquet"], words=["no.parquet"]),
    "train-estimator table garbage": dict(argv=["train-estimator", "--table", "g.parquet"],
                                          files={"g.parquet": b"PAR1 garbage"}, words=["g.parquet"]),
    "train-estimator table a folder": dict(argv=["train-estimator", "--table", "tdir"], files={"tdir": DIR},
                                           words=["tdir"]),
    "train-estimator on a read-only folder": dict(
        argv=["train-estimator", "--table", "mb.parquet", "--out", EST, "--n-estimators", "2"], fault=30,
        words=[EST, "Read-only"]),
    "train-estimator 0 rounds": dict(argv=["train-estimator", "--table", "t.parquet", "--n-estimators", "0"],
                                     words=["--n-estimators"]),
    # MLflow store and pipeline
    "lineage on random bytes": dict(argv=["lineage", "abc"], files={"mlflow.db": bytes(range(256)) * 20},
                                    words=["mlflow.db", "not an SQLite database"]),
    "lineage on a damaged database": dict(argv=["lineage", "abc"], files={"mlflow.db": SQLITE_GARBAGE},
                                          words=["mlflow.db"]),
    "lineage on a folder": dict(argv=["lineage", "abc"], files={"mlflow.db": DIR}, words=["mlflow.db"]),
    "lineage on a store elsewhere": dict(argv=["lineage", "abc"], files={"other.db": b"garbage" * 10},
                                         env={"MLFLOW_TRACKING_URI": "sqlite:///other.db"}, words=["other.db"]),
    "run on random bytes mlflow.db": dict(argv=["run"], files={"params.yaml": PARAMS, "mlflow.db": b"\x00" * 512},
                                          words=["mlflow.db"]),
    "run on binary params.yaml": dict(argv=["run"], files={"params.yaml": bytes(range(256))}, words=["params.yaml"]),
    "run on empty params.yaml": dict(argv=["run"], files={"params.yaml": b""}, words=["params.yaml"]),
    "run on a params.yaml folder": dict(argv=["run"], files={"params.yaml": DIR}, words=["params.yaml"]),
    # experiments
    "zeroshot without a supernet": dict(argv=["experiment", "zeroshot"], words=["supernet.pt"]),
    "zeroshot -n 3": dict(argv=["experiment", "zeroshot", "-n", "3"], words=["-n"]),
    "zeroshot bad runner": dict(argv=["experiment", "zeroshot", "--runner", "gpus"], words=["--runner"]),
    "zeroshot negative seed": dict(argv=["experiment", "zeroshot", "--seed", "-1"], words=["--seed"]),
    "zeroshot unknown task": dict(argv=["experiment", "zeroshot", "--task", "pose"],
                                  words=["--task", "pose"]),
    "zeroshot 0 seeds": dict(argv=["experiment", "zeroshot", "--seeds", "0"], words=["--seeds"]),
    "zeroshot on an empty supernet.pt": dict(argv=["experiment", "zeroshot"], setup="supernet",
                                             files={str(layout.SUPERNET): b""}, words=["supernet.pt"]),
    "zeroshot on a truncated supernet.pt": dict(argv=["experiment", "zeroshot"], setup="supernet",
                                                files={str(layout.SUPERNET): b"PK\x03\x04" + b"\x00" * 200},
                                                words=["supernet.pt", "not a readable supernet"]),
    "curation bad score": dict(argv=["experiment", "curation", "--score", "oracle"], words=["--score"]),
    "curation 0 seeds": dict(argv=["experiment", "curation", "--seeds", "0"], words=["--seeds"]),
    "schedule without --cron": dict(argv=["schedule"], words=["--cron"]),
}


@pytest.fixture(scope="module")
def tiny_estimator(tmp_path_factory):
    """A tiny simulator-trained estimator for neural-engine-32 (a few seconds)."""
    from hardware.spec import load_spec
    from hwnas.estimator import LightGBMConfig
    from hwnas.estimator.microbench import MicrobenchConfig, run_microbench
    from hwnas.estimator.train import train

    spec = load_spec("neural-engine-32")
    cfg = MicrobenchConfig(samples=120, repeats=2, noise=0.03, seed=1, time_budget_s=30,
                           spaces=[{"resolution": 32, "in_channels": 3}])
    table = run_microbench(cfg, spec)
    root = tmp_path_factory.mktemp("tiny-est")
    table.to_parquet(root / "mb.parquet")
    train(table, spec, "sim", LightGBMConfig(n_estimators=5), root / "neural-engine-32", "test")
    return root / "neural-engine-32"


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("name", sorted(IN_PROCESS))
def test_hostile_input_in_process(name, tmp_path, monkeypatch, request):
    from typer.testing import CliRunner

    from hwnas.cli import app

    case = IN_PROCESS[name]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in case.get("env", {}).items():
        monkeypatch.setenv(key, value)
    needs_estimator = EST in case["argv"] or case.get("setup") == "supernet"
    if needs_estimator:
        est = request.getfixturevalue("tiny_estimator")
        target = (tmp_path / "models/estimator/neural-engine-32" if case.get("setup") == "supernet"
                  else tmp_path / EST)
        shutil.copytree(est, target)
        if "mb.parquet" in case["argv"]:
            shutil.copy(est.parent / "mb.parquet", tmp_path)
        if case.get("setup") == "supernet":
            (tmp_path / "params.yaml").write_bytes(PARAMS)
    for fname, content in case.get("files", {}).items():
        path = tmp_path / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if content is DIR else path.write_bytes(content)
    if callable(case.get("setup")):
        case["setup"](tmp_path)
    if case.get("out"):
        (tmp_path / case["out"]).write_bytes(OLD)
    if case.get("fault"):
        def refuse(*args, **kwargs):
            raise OSError(case["fault"], os.strerror(case["fault"]))
        monkeypatch.setattr(os, "replace", refuse)
    before = _tree(tmp_path)
    r = CliRunner().invoke(app, case["argv"], input=case.get("stdin", ""))
    monkeypatch.undo()
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2, (r.exit_code, r.stderr[-2000:], r.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert len(lines[0]) < 600 and "Traceback" not in r.stderr
    assert all(w in lines[0] for w in case["words"]), lines[0]
    assert r.stdout == ""
    assert _tree(tmp_path) == before  # nothing written, no temporary left, OLD intact
    if case.get("out"):
        assert (tmp_path / case["out"]).read_bytes() == OLD


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_a_truncated_model_file_is_named_not_a_crash(cut, tiny_estimator, tmp_path):
    """LightGBM segfaults (or aborts, printing to stdout) on some cut files: the checksum
    stops them before it parses anything; a subprocess shows a crash as its exit code."""
    est = tmp_path / "est"
    shutil.copytree(tiny_estimator, est)
    manifest = json.loads((est / "manifest.json").read_text())
    for entry in manifest["kinds"].values():
        f = est / entry["file"]
        f.write_bytes(f.read_bytes()[:int(f.stat().st_size * cut)])
    proc = subprocess.run([HWNAS, "estimate", "--estimator", str(est), "--arch", TINY],
                          cwd=tmp_path, capture_output=True, timeout=120)
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, lines[-5:])
    assert len(lines) == 1 and "checksum mismatch" in lines[0] and ".txt" in lines[0], lines
    assert proc.stdout == b""


def test_an_out_of_range_network_warns_in_estimate_and_expert_alike(tiny_estimator, tmp_path,
                                                                    monkeypatch):
    from typer.testing import CliRunner

    from hwnas.cli import app

    monkeypatch.chdir(tmp_path)
    big = "i3x32x32-stem_k3_c32_s1-conv_k9_c64_s2-cls_f0_n10"  # kernel 9: never measured
    runner = CliRunner()
    warnings = []
    for argv in (["estimate", "--arch", big], ["expert", "--arch", big, "--out", "a.json"]):
        r = runner.invoke(app, [*argv, "--estimator", str(tiny_estimator), "--json"])
        assert r.exit_code == 0, r.output
        warnings.append([ln for ln in r.stderr.splitlines() if ln.startswith("warning: ")])
    assert warnings[0] and warnings[0][0] == warnings[1][0], warnings
    assert "kernel=9 above" in warnings[0][0]


def test_a_broken_bundled_spec_is_named_and_the_others_still_listed(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import hardware.spec
    from hwnas.cli import app

    for spec in (ROOT / "hardware/specs").glob("*.yaml"):
        shutil.copy(spec, tmp_path)
    (tmp_path / "zz-broken.yaml").write_text("name: [unclosed\n")
    monkeypatch.setattr(hardware.spec, "SPECS_DIR", tmp_path)
    r = CliRunner().invoke(app, ["specs"])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "zz-broken.yaml" in lines[0], r.stderr
    assert "edge-16" in r.stdout and "neural-engine-64" in r.stdout


def test_json_output_refuses_non_finite_numbers_naming_them():
    from hwnas.errors import UserError
    from hwnas.files import dumps

    with pytest.raises(UserError, match=r"\(net\): kernels\[1\]\.latency_ms is inf"):
        dumps({"name": "net", "kernels": [{"latency_ms": 1.0}, {"latency_ms": float("inf")}]})


def test_a_damaged_supernet_is_one_line_in_a_stage(tmp_path):
    """load_supernet raises a UserError, so run_stage reports it in one line, exit 2."""
    bad = tmp_path / "supernet.pt"
    bad.write_bytes(b"\x80\x04garbage")
    code = ("import sys; from hwnas.params import run_stage; from hwnas.supernet import load_supernet; "
            f"run_stage('search', lambda: load_supernet({str(bad)!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and str(bad) in lines[0], proc.stderr[-2000:]


def test_case_count():
    """The brief: at least 100 table-driven hostile cases."""
    assert len(CASES) + len(IN_PROCESS) >= 100


def _processes_in(folder: Path) -> list[int]:
    """Processes whose working directory is ``folder``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == folder:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_a_killed_pipeline_leaves_no_process_no_lock_and_no_running_run(tmp_path):
    """kill -9 of ``hwnas run`` mid-stage: dvc, the stage and the temporary Prefect server
    die with it; the next run gets the workspace and marks the dead runs KILLED."""
    import signal
    import time

    import yaml

    (tmp_path / "params.yaml").write_bytes((ROOT / "params.yaml").read_bytes())
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "slow": {"cmd": "python -c \"import time; open('started', 'w'); time.sleep(300)\""},
        "quick": {"cmd": "python -c \"open('done', 'w')\""}}}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path,
                   check=True, env=env)
    run = subprocess.Popen([HWNAS, "run", "--stage", "slow"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists():
        assert run.poll() is None and time.monotonic() < deadline, "the stage never started"
        time.sleep(0.5)
    assert len(_processes_in(tmp_path)) >= 3  # hwnas, the Prefect server, dvc, the stage
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 15
    while _processes_in(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_in(tmp_path) == [], "orphans outlived the pipeline"

    second = subprocess.run([HWNAS, "run", "--stage", "quick"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr[-2000:]
    assert (tmp_path / "done").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("hwnas").experiment_id])
    status = {(r.info.run_name, r.data.tags.get("stages", r.data.tags.get("stage"))): r.info.status
              for r in runs}
    assert status[("pipeline", "slow")] == "KILLED" and status[("stage:slow", "slow")] == "KILLED"
    assert status[("pipeline", "quick")] == "FINISHED"
    assert "RUNNING" not in status.values()


@pytest.mark.parametrize("args, words", [
    (["--cron", "0 3 * * *", "--timezone", "Mars/Olympus"], ["--timezone", "Mars/Olympus"]),
    (["--cron", "every night"], ["--cron", "'every night'"]),
])
def test_schedule_refuses_a_bad_cron_or_timezone(args, words, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # never contacted
    proc = subprocess.run([HWNAS, "schedule", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and all(w in lines[0] for w in words), lines


# ---- stage inputs: params.yaml values and evaluate's artifacts, refused in one line -------

def _params_edit(old: str, new: str):
    return lambda text: text.replace(old, new, 1)


PARAMS_CASES = {  # name: (edit of params.yaml's text, words the error must hold)
    "seed 2^70 (torch overflows)": (_params_edit("  seed: 0", "  seed: 1180591620717411303424"), ["base.seed"]),
    "threads 2^40 (torch overflows)": (_params_edit("  threads: 2 ", "  threads: 1099511627776 "),
                                       ["train_supernet.threads"]),
    "search workers 10^6": (_params_edit("  workers: 2 ", "  workers: 1000000 "), ["search.workers"]),
    "references noise 5": (_params_edit("  noise: 0.0 ", "  noise: 5 "), ["references.noise"]),
    "microbench samples 10^12": (_params_edit("  samples: 10000 ", "  samples: 1000000000000 "),
                                 ["microbench.samples"]),
    "eval_seed 2^40": (_params_edit("  eval_seed: 1000 ", "  eval_seed: 1099511627776 "),
                       ["train_estimator.eval_seed"]),
    "a key given twice": (_params_edit("  seed: 0", "  seed: 0\n  seed: 1"), ["seed", "given twice"]),
}


@pytest.mark.parametrize("name", sorted(PARAMS_CASES))
def test_bad_params_are_named(name, tmp_path):
    from hwnas.params import ParamsError, load_params

    edit, words = PARAMS_CASES[name]
    path = tmp_path / "params.yaml"
    path.write_text(edit(PARAMS.decode()))
    with pytest.raises(ParamsError) as err:
        load_params(path)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value), err.value


def _json_edit(fn):
    def edit(path: Path):
        data = json.loads(path.read_text())
        path.write_text(json.dumps(fn(data) or data))
    return edit


def _table_edit(fn):
    def edit(path: Path):
        import pandas as pd
        fn(pd.read_parquet(path)).to_parquet(path)
    return edit


def _first_model(key, value=None, drop=False):
    def fn(d):
        m = next(iter(d["models"].values()))
        m.pop(key) if drop else m.__setitem__(key, value)
    return fn


EVALUATE_INPUTS = {  # name: (file, edit, words)
    "pareto baseline score a string": (layout.PARETO,
                                          _json_edit(lambda d: d["baseline"].update(score="high")),
                                          ["pareto.json", "baseline.score"]),
    "subnets.json a list": (layout.EXTRACTED, lambda p: p.write_text("[]"),
                            ["subnets.json", "JSON object"]),
    "subnets.json without models": (layout.EXTRACTED, _json_edit(lambda d: d.pop("models") and None),
                                    ["subnets.json", "models: missing"]),
    "a model without arch": (layout.EXTRACTED, _json_edit(_first_model("arch", drop=True)),
                             ["subnets.json", ".arch: missing"]),
    "a model score NaN": (layout.EXTRACTED, _json_edit(_first_model("score", float("nan"))),
                             ["subnets.json", ".score", "finite"]),
    "space not a space": (layout.EXTRACTED, _json_edit(lambda d: d.update(space={"x": 1})),
                          ["subnets.json", "space", "not a search space"]),
    "baseline metrics a list": (layout.BASELINE / "metrics.json", lambda p: p.write_text("[1]"),
                                ["baseline/metrics.json", "JSON object"]),
    "baseline metrics without arch": (layout.BASELINE / "metrics.json", _json_edit(lambda d: d.pop("arch") and None),
                                      ["baseline/metrics.json", "arch: missing"]),
    "baseline score a string": (layout.BASELINE / "metrics.json", _json_edit(lambda d: d.update(score="x")),
                                   ["baseline/metrics.json", "score"]),
    "candidates empty file": (layout.CANDIDATES, lambda p: p.write_bytes(b""),
                              ["candidates.parquet", "not a readable parquet"]),
    "candidates without arch": (layout.CANDIDATES, _table_edit(lambda d: d.drop(columns=["arch"])),
                                ["candidates.parquet", "'arch'"]),
    "candidates without rows": (layout.CANDIDATES, _table_edit(lambda d: d.iloc[:0]),
                                ["candidates.parquet", "no rows"]),
    "candidates score text": (layout.CANDIDATES,
                                 _table_edit(lambda d: d.assign(score=d["score"].astype(str))),
                                 ["candidates.parquet", "'score'"]),
    "candidates latency NaN": (layout.CANDIDATES,
                               _table_edit(lambda d: d.assign(latency_ms=float("nan"))),
                               ["candidates.parquet", "'latency_ms'"]),
}


@pytest.mark.parametrize("name", sorted(EVALUATE_INPUTS))
def test_bad_evaluate_inputs_are_named(name, tmp_path, monkeypatch):
    """Each was a traceback (KeyError, TypeError, ArrowInvalid) before any output."""
    import pandas as pd

    from hwnas.evaluation.run import read_inputs
    from hwnas.errors import UserError

    for f in (layout.PARETO, layout.EXTRACTED, layout.BASELINE / "metrics.json"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, tmp_path / f)
    front = json.loads((ROOT / layout.PARETO).read_text())["pareto"]
    pd.DataFrame({"arch": [e["arch"] for e in front], "score": [float(e["score"]) for e in front],
                  "latency_ms": [float(e["latency_ms"]) for e in front]}).to_parquet(
        tmp_path / layout.CANDIDATES)
    monkeypatch.chdir(tmp_path)
    read_inputs()  # the copies are good
    file, edit, words = EVALUATE_INPUTS[name]
    edit(tmp_path / file)
    with pytest.raises(UserError) as err:
        read_inputs()
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value), err.value


def test_a_stage_failing_at_its_last_output_keeps_every_output(tmp_path):
    """evaluate wrote report.md, then refused a NaN in models.json: report.md was new, the
    rest old. ``staged`` renames nothing until every output is written."""
    from hwnas.errors import UserError
    from hwnas.files import staged

    (tmp_path / "old").mkdir()
    for name in ("a.md", "b.json", "old/m.pt"):
        (tmp_path / name).write_bytes(OLD)
    before = _tree(tmp_path)
    with pytest.raises(UserError, match="c.json"):
        with staged() as files:
            (files.dir(tmp_path / "old") / "m.pt").write_bytes(b"new")
            files.text(tmp_path / "a.md", "new")
            files.json(tmp_path / "b.json", {"x": 1})
            files.json(tmp_path / "c.json", {"x": float("nan")})
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("uri, words", [
    ("http://127.0.0.1:9", ["http://127.0.0.1:9", "no MLflow server answers"]),
    ("sqlite:///garbage.db", ["garbage.db", "not an SQLite database"]),
])
def test_a_stage_run_on_a_bad_store_is_one_line_before_its_body(uri, words, tmp_path, monkeypatch):
    """A dead server took minutes of MLflow retries, then a traceback; a garbage store a
    SQLAlchemy traceback after the outputs were written."""
    import time

    from hwnas import tracking
    from hwnas.errors import UserError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.db").write_bytes(bytes(range(256)) * 4)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    t0 = time.monotonic()
    with pytest.raises(UserError) as err:
        with tracking.run("stage"):
            raise AssertionError("the body ran")
    assert time.monotonic() - t0 < 10 and all(w in str(err.value) for w in words), err.value
