"""timm-style: every reference architecture builds, trains a step, round-trips and simulates."""
from dataclasses import replace

import pytest
import torch

from hardware.spec import load_spec
from hwnas.arch import InputSpec, decode, encode
from hwnas.lowering import static_cost
from hwnas.model import build_model, folded_param_count
from hwnas.simulation import simulate_arch
from hwnas.registry import REFERENCES, reference


@pytest.fixture(params=sorted(REFERENCES))
def arch(request):
    return reference(request.param)


def test_builds_forward_backward_on_tiny_input(arch):
    torch.manual_seed(0)
    # Tiny input: 32x32 still survives the 224 models' five stride-2 stages.
    small = replace(arch, input=InputSpec(arch.input.channels, 32, 32))
    model = build_model(small)
    x = torch.randn(2, arch.input.channels, 32, 32)
    out = model(x)
    assert out.shape == (2, arch.head.classes)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_string_round_trip(arch):
    assert decode(encode(arch)) == arch


def test_param_count_matches_pytorch(arch):
    assert static_cost(arch).params == folded_param_count(build_model(arch))


def test_simulates(arch):
    spec = load_spec()
    record = simulate_arch(arch, spec)
    assert record["latency_ms"] > 0 and record["energy_mj"] > 0
    assert 0 < record["utilization"] <= 1
    assert sum(k["cycles"] for k in record["kernels"]) == pytest.approx(record["cycles"])
    assert record["memory_bytes"] == record["params_bytes"] + record["peak_activation_bytes"]


def test_mobilenetv2_224_matches_published_size():
    cost = static_cost(reference("mobilenetv2_224"))
    assert 3.4e6 < cost.params < 3.6e6  # 3.5M in the MobileNetV2 paper
    assert 295e6 < cost.macs < 305e6    # 300M multiply-adds
