"""params.yaml's schema: every key checked before any stage runs."""
from pathlib import Path

import pytest
import yaml

from hwnas.params import ParamsError, validate_params

PARAMS = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


def _with(path: str, value, drop: bool = False) -> dict:
    params = yaml.safe_load(yaml.safe_dump(PARAMS))
    *parents, key = path.split(".")
    node = params
    for part in parents:
        node = node[part]
    if drop:
        del node[key]
    else:
        node[key] = value
    return params


def test_the_repository_params_pass():
    assert validate_params(PARAMS) is PARAMS


@pytest.mark.parametrize("path, value, message", [
    ("search.candidatez", 10, "search.candidatez: unknown key"),
    ("serach", {}, "serach: unknown key"),
    ("train_supernet.train.epochs", -1, "train_supernet.train.epochs: Input should be greater"),
    ("train_supernet.train.epochs", "six", "train_supernet.train.epochs: Input should be a valid integer"),
    ("train_supernet.train.distill", 1, "train_supernet.train.distill: Input should be a valid boolean"),
    ("train_supernet.device", "tpu", "train_supernet.device: String should match"),
    ("train_supernet.space.stages", 32, "train_supernet.space.stages: Input should be a valid list"),
    ("train_supernet.data.val_fraction", 0.9, "train_supernet.data.test_fraction: val_fraction"),
    ("references.noise", -1, "references.noise"),
    ("search.score_tie", float("nan"), "search.score_tie"),
    ("microbench.spaces", [{"resolution": 32, "stages": [[32, 1, 3]]}], "stride must be 1 or 2"),
    ("base.hardware", "hardware/specs/edge-16.yaml", "base.hardware: name a spec, not a file"),
])
def test_a_bad_value_names_the_dotted_key(path, value, message):
    with pytest.raises(ParamsError, match="^params.yaml: ") as err:
        validate_params(_with(path, value))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_key_is_named():
    with pytest.raises(ParamsError, match=r"params.yaml: search.workers: missing"):
        validate_params(_with("search.workers", None, drop=True))


def test_a_numbered_cuda_device_is_accepted():
    validate_params(_with("train_supernet.device", "cuda:1"))
