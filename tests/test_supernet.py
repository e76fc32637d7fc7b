"""Supernet: exact subnet extraction, no hidden state, BN recalibration, sandwich
training and checkpoint resume, on a tiny space and scikit-learn's digits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hardware.spec import load_spec
from hwnas.arch import ArchSpec, BlockSpec, StemSpec, validate
from hwnas.space import SpaceConfig, SpaceError, curated_space
from hwnas.supernet import (SuperNet, SupernetError, extract_subnet, load_supernet,
                            recalibrate_bn, supernet_state)
from hwnas.training import TrainConfig, make_optimizer, sandwich_archs, sandwich_step



pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = SpaceConfig(resolution=16, in_channels=1, classes=10, head_features=32, stem_stride=2,
                   stages=((32, 1, 2), (32, 2, 1), (64, 1, 2)), kernels=(3, 5, 7),
                   expands=(1, 2, 3), depth_multipliers=(0.5, 1.0, 1.5), width_range=(0.5, 1.0))


@pytest.fixture(scope="module")
def space():
    return curated_space(load_spec("neural-engine-32"), TINY)


@pytest.fixture(scope="module")
def supernet(space):
    """A supernet whose BN running statistics are non-trivial (a few train-mode passes)."""
    torch.manual_seed(0)
    net = SuperNet(space)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for _ in range(3):
            for arch in sandwich_archs(net, rng, 2):
                net(torch.randn(8, 1, 16, 16), arch)
        for name, p in net.named_parameters():  # kernel transformations away from identity
            if "ktrans" in name:
                p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def _special_archs(space) -> list[ArchSpec]:
    """Residual ibn with expand 1, residual fused_ibn, a cropped kernel, narrow widths."""
    big = space.largest()
    blocks = (BlockSpec("ibn", 3, 32, 2, 1), BlockSpec("ibn", 5, 32, 1, 1),     # stage 0
              BlockSpec("fused_ibn", 5, 32, 1, 2), BlockSpec("fused_ibn", 3, 32, 1, 3),
              BlockSpec("ibn", 7, 32, 1, 2),                                       # stage 1
              BlockSpec("ibn", 3, 64, 2, 3), BlockSpec("fused_ibn", 5, 64, 1, 1))  # stage 2
    mixed = validate(ArchSpec(stem=StemSpec(32, 3, 2), blocks=blocks, head=big.head,
                              input=big.input))
    return [big, space.smallest(), mixed]


def test_extracted_subnet_equals_supernet_in_eval_mode(space, supernet):
    rng = np.random.default_rng(1)
    archs = _special_archs(space) + [space.sample(rng) for _ in range(6)]
    kinds = {(b.type, b.expand == 1, b.residual(c)) for a in archs
             for b, c in zip(a.blocks, a.channels())}
    assert {("ibn", True, True), ("fused_ibn", False, True), ("ibn", False, False)} <= kinds
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        for arch in archs:
            net = extract_subnet(supernet, arch).eval()
            assert (net(x) - supernet(x, arch)).abs().max() <= 1e-5, arch.encode()


def test_forward_takes_the_arch_and_keeps_no_state(space, supernet):
    x = torch.randn(2, 1, 16, 16)
    a, b = space.largest(), space.smallest()
    with torch.no_grad():
        first = supernet(x, a)
        supernet(x, b)
        assert torch.equal(first, supernet(x, a))


def test_recalibration_is_consistent_between_supernet_and_subnet(space):
    torch.manual_seed(0)
    net = SuperNet(space)
    arch = space.sample(np.random.default_rng(5))
    batches = [(torch.randn(16, 1, 16, 16), None) for _ in range(3)]
    sub = recalibrate_bn(extract_subnet(net, arch), batches).eval()
    recalibrate_bn(net, batches, forward=lambda x: net(x, arch))
    net.eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert (sub(x) - net(x, arch)).abs().max() <= 1e-5
    # the statistics are the plain average over the batches, not the initial ones
    assert not torch.allclose(sub.stem[1].running_var, torch.ones_like(sub.stem[1].running_var))
    assert not sub.training and sub.stem[1].momentum == 0.1


def test_archs_that_do_not_fit_are_named(space, supernet):
    big = space.largest()
    bad = validate(ArchSpec(stem=big.stem, input=big.input, head=big.head,
                            blocks=(*big.blocks[:-1], BlockSpec("fused_ibn", 9, 64, 1, 3))))
    with pytest.raises(SupernetError, match=r"blocks\[\d+\]\.kernel: 9 exceeds"):
        supernet(torch.randn(1, 1, 16, 16), bad)
    with pytest.raises(SupernetError, match="match no depth"):
        supernet.plan(ArchSpec(stem=big.stem, input=big.input, head=big.head,
                               blocks=big.blocks[:-1] * 3))


@pytest.mark.parametrize("distill_stages", [0.0, 0.2])
def test_sandwich_step_trains_every_subnet_it_runs(space, distill_stages):
    torch.manual_seed(0)
    net = SuperNet(space)
    cfg = TrainConfig(lr=0.05, distill_stages=distill_stages)
    opt = make_optimizer(net, cfg)
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    archs = sandwich_archs(net, np.random.default_rng(0), 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    out = sandwich_step(net, x, y, archs, opt, cfg)
    assert out["loss_largest"] > 0 and out["loss_students"] >= 0
    changed = {k.split(".")[0] for k, v in net.state_dict().items()
               if not torch.equal(v, before[k])}
    assert {"stem", "stages", "head"} <= changed
    # ibn weights of the first block (used only by the smallest/random subnets) got trained too
    ibn = net.stages[0][0]["ibn"].dw.conv.weight
    assert not torch.equal(ibn, before["stages.0.0.ibn.dw.conv.weight"])


def test_stage_outputs_come_with_the_same_logits(space, supernet):
    x = torch.randn(2, 1, 16, 16)
    for arch in _special_archs(space):
        with torch.no_grad():
            logits, stages = supernet.forward_stages(x, arch)
            assert torch.equal(logits, supernet(x, arch))
        last_of_stage = {s: b.out for (s, _), b in zip(supernet.plan(arch), arch.blocks)}
        assert [t.shape[1] for t in stages] == list(last_of_stage.values())
        assert len(stages) == len(space.stages)


def test_stage_distillation_compares_the_students_channels():
    from hwnas.training import stage_distill_loss

    teacher = [torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    same = [teacher[0][:, :4], teacher[1][:, :8]]
    assert stage_distill_loss(same, teacher).item() == 0.0
    other = [same[0] + 1.0, same[1]]
    expected = 1.0 / teacher[0][:, :4].pow(2).mean()
    assert torch.isclose(stage_distill_loss(other, teacher), expected)


def test_stage_regressor_maps_the_students_channels_to_the_teachers():
    from hwnas.training import stage_distill_loss

    teacher = [torch.randn(2, 8, 4, 4)]
    maps = [torch.eye(8)]
    student = [teacher[0][:, :4].clone()]
    # identity maps: the student's 4 channels against all 8 of the teacher
    expected = teacher[0][:, 4:].pow(2).sum(1).mean() / 8 / teacher[0].pow(2).mean()
    assert torch.isclose(stage_distill_loss(student, teacher, maps), expected)
    # a map that predicts the other channels from the student's: no error left
    mix = torch.randn(4, 4)
    teacher = [torch.cat([student[0], torch.einsum("nchw,dc->ndhw", student[0], mix)], 1)]
    maps = [torch.cat([torch.cat([torch.eye(4), mix]), torch.zeros(8, 4)], 1)]
    assert stage_distill_loss(student, teacher, maps).item() < 1e-10


def test_stage_regressor_learns_in_the_sandwich_step(space):
    torch.manual_seed(0)
    net = SuperNet(space)
    cfg = TrainConfig(lr=0.05, distill_stages=1.0, stage_regressor=True, teacher_weight=2.0)
    opt = make_optimizer(net, cfg)
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,))
    sandwich_step(net, x, y, sandwich_archs(net, np.random.default_rng(0), 2), opt, cfg)
    assert all(not torch.equal(m, torch.eye(len(m))) for m in net.stage_maps)
    # no subnet uses the maps: the extracted model has none of them
    assert not any("stage_maps" in k for k in extract_subnet(net, net.largest()).state_dict())


def test_state_round_trips_through_a_file(space, supernet, tmp_path):
    torch.save(supernet_state(supernet), tmp_path / "s.pt")
    loaded = load_supernet(tmp_path / "s.pt").eval()
    x, arch = torch.randn(2, 1, 16, 16), space.sample(np.random.default_rng(2))
    with torch.no_grad():
        assert torch.equal(loaded(x, arch), supernet(x, arch))


def _stage_params(epochs: int) -> dict:
    return {"seed": 0, "hardware": "neural-engine-32", "device": "cpu", "calib_batches": 2,
            "data": {"dataset": "digits", "resolution": 16, "val_fraction": 0.1,
                     "test_fraction": 0.2},
            "space": {"head_features": 32, "stem_stride": 2, "kernels": [3, 5], "expands": [1, 2],
                      "stages": [[32, 1, 2], [32, 1, 1]], "depth_multipliers": [1.0, 2.0],
                      "width_range": [0.5, 1.0]},
            "train": {"epochs": epochs, "batch_size": 128, "num_random": 1, "lr": 0.1}}


def test_training_resumes_after_a_kill_to_the_same_weights(tmp_path):
    from hwnas.context import train_context
    from hwnas.training import train_supernet as train

    s = train_context(_stage_params(2))
    assert len(s.loader("val+test").data) == len(s.splits.val) + len(s.splits.test)
    straight, summary = train(s, tmp_path / "a.pt", progress=False)
    assert summary["epochs"] == 2 and summary["val_score_largest"] > 30  # it learns digits

    class Killed(Exception):
        pass

    def die(metrics, epoch):
        raise Killed

    with pytest.raises(Killed):
        train(s, tmp_path / "b.pt", progress=False, log=die)  # dies after epoch 1's checkpoint
    resumed, _ = train(s, tmp_path / "b.pt", progress=False)
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(v, w), k
    # other params: the checkpoint is not reused
    other = train_context({**_stage_params(2), "seed": 1})
    fresh, _ = train(other, tmp_path / "b.pt", progress=False)
    assert not torch.equal(fresh.stem.conv.weight, straight.stem.conv.weight)


def test_a_checkpoint_of_other_code_is_not_resumed(tmp_path, monkeypatch):
    import hwnas.training
    from hwnas.checkpoint import fingerprint
    from hwnas.training import supernet_fingerprint as checkpoint_fingerprint

    p = _stage_params(1)
    before = checkpoint_fingerprint(p)
    assert before == checkpoint_fingerprint(p) and before != fingerprint(p)
    edited = tmp_path / "training.py"
    edited.write_text(Path(hwnas.training.__file__).read_text() + "\n# edited\n")
    monkeypatch.setattr(hwnas.training, "__file__", str(edited))
    assert checkpoint_fingerprint(p) != before


@pytest.mark.parametrize("extremes", ["fixed", "cycle", "random", "all"])
def test_sandwich_extremes_cover_every_block_type(space, supernet, extremes):
    rng = np.random.default_rng(0)
    steps = [sandwich_archs(supernet, rng, 1, step, extremes) for step in range(4)]
    big = {b.type for archs in steps for b in archs[0].blocks}
    small = {b.type for archs in steps for b in archs[1].blocks}
    if extremes == "fixed":
        assert big == {"fused_ibn"} and small == {"ibn"}
    elif extremes == "all":  # fused_ibn teaches; the all-ibn largest learns every step
        assert big == {"fused_ibn"} and small == {"ibn", "fused_ibn"}
        assert all({b.type for b in a[2].blocks} == {"ibn"} and len(a) == 4 for a in steps)
    else:
        assert big == small == {"ibn", "fused_ibn"}
    for archs in steps:  # the largest keeps the largest dims, whatever its types
        assert [(b.kernel, b.out, b.expand) for b in archs[0].blocks] == \
            [(b.kernel, b.out, b.expand) for b in space.largest().blocks]
        with torch.no_grad():
            for arch in archs:
                supernet(torch.randn(2, 1, 16, 16), arch)
    if extremes == "cycle":  # step by step: fused/ibn teacher in turn
        assert [a[0].blocks[0].type for a in steps] == ["fused_ibn", "ibn"] * 2
    with pytest.raises(ValueError, match="extremes"):
        sandwich_archs(supernet, rng, 1, 0, "both")


def test_probe_subnets_cover_types_kernels_and_the_baseline(space):
    from hwnas.proof import probe_subnets

    probes = probe_subnets(space)
    kinds = {(a.blocks[0].type, a.blocks[0].kernel) for a in probes if a.name != "baseline_ibn_k3"}
    assert kinds == {(t, k) for t in ("ibn", "fused_ibn") for k in (3, 5, 7)}
    base = [a for a in probes if a.name == "baseline_ibn_k3"]
    assert len(base) == 1 and {(b.type, b.kernel, b.expand) for b in base[0].blocks} == {("ibn", 3, 3)}
    with pytest.raises(SpaceError, match="block_type"):
        space.largest("conv")


def test_later_blocks_of_a_stage_start_as_the_identity(space):
    """Zero-initialized last BN of residual blocks: a fresh supernet computes the same
    function with or without a stage's later blocks."""
    torch.manual_seed(0)
    net = SuperNet(space).eval()
    deep = space.largest()
    firsts, seen = [], set()
    for (s, _), b in zip(net.plan(deep), deep.blocks):
        if s not in seen:
            seen.add(s)
            firsts.append(b)
    shallow = validate(ArchSpec(stem=deep.stem, blocks=tuple(firsts), head=deep.head,
                                input=deep.input))
    assert len(shallow.blocks) < len(deep.blocks)
    x = torch.randn(2, 1, 16, 16)
    assert torch.allclose(net(x, deep), net(x, shallow), atol=1e-6)


def test_spread_subnets_cover_the_size_range_evenly_in_log_macs(space):
    from hwnas.lowering import static_cost
    from hwnas.proof import spread_subnets

    archs = spread_subnets(space, 8, 300, seed=0)
    log_macs = np.log([static_cost(a).macs for a in archs])
    assert len({a.encode() for a in archs}) == 8
    assert archs[0] == space.smallest() and archs[-1] == space.largest()
    assert np.all(np.diff(log_macs) > 0)
    # no gap between neighbours is more than twice the even step
    assert np.diff(log_macs).max() < 2 * (log_macs[-1] - log_macs[0]) / 7


def test_small_kernels_are_transformed_crops(space, supernet):
    conv = supernet.stages[0][0]["fused_ibn"].fused
    assert conv.small_kernels == (5, 3) and conv.weight(8, 16, 7).shape == (16, 8, 7, 7)
    w7, w3 = conv.conv.weight[:16, :8], conv.weight(8, 16, 3)
    assert w3.shape == (16, 8, 3, 3) and not torch.allclose(w3, w7[..., 2:5, 2:5])
    plain = SuperNet(space, kernel_transform=False)
    assert not any("ktrans" in n for n, _ in plain.named_parameters())


def test_scratch_results_average_seeds_and_cache_runs(space, tmp_path, monkeypatch):
    import hwnas.proof as ev
    from hwnas.context import train_context

    s = train_context(_stage_params(1))
    calls = []

    def fake(arch, s, split, seed):
        calls.append(seed)
        return 90.0 + seed

    monkeypatch.setattr(ev, "scratch_score", fake)
    archs = [s.space.largest(), s.space.smallest()]
    one = ev.scratch_results(archs, s, tmp_path / "c.jsonl", eval_split="val+test",
                             workers=1)
    assert calls == [0, 0] and one[archs[0].key]["scratch_score"] == 90.0
    two = ev.scratch_results(archs, s, tmp_path / "c.jsonl", eval_split="val+test", seeds=2,
                             workers=1)
    assert calls == [0, 0, 1, 1]  # run 0 came from the cache
    row = two[archs[1].key]
    assert row["scratch_scores"] == [90.0, 91.0] and row["scratch_score"] == 90.5
    ev.scratch_results(archs, s, tmp_path / "c.jsonl", eval_split="test", workers=1)
    assert calls[-2:] == [0, 0]  # another evaluation split is another result


def test_split_half_tau_measures_how_stable_the_reference_is():
    from hwnas.proof import split_half_tau

    steady = [{"scratch_scores": [90 + i, 90.2 + i, 90.1 + i, 89.9 + i]} for i in range(5)]
    assert split_half_tau(steady) == 1.0
    flipped = [{"scratch_scores": [90 + i, 94 - i]} for i in range(5)]
    assert split_half_tau(flipped) == -1.0
    assert split_half_tau([{"scratch_scores": [90.0]}, {"scratch_scores": [91.0]}]) is None



def test_scratch_results_train_in_two_worker_processes(tmp_path):
    """The proof's from-scratch runs go two at a time to workers; the journal keeps them."""
    from hwnas.context import train_context
    from hwnas.files import read_journal
    from hwnas.proof import scratch_results

    ctx = train_context(_stage_params(1))
    archs = [ctx.space.smallest(), ctx.space.largest()]
    rows = scratch_results(archs, ctx, tmp_path / "c.jsonl", workers=2)
    assert list(rows) == [a.key for a in archs]
    assert all(0.0 <= r["scratch_score"] <= 100.0 for r in rows.values())
    assert len(read_journal(tmp_path / "c.jsonl")) == 2
    again = scratch_results(archs, ctx, tmp_path / "c.jsonl", workers=2)
    assert again == rows and len(read_journal(tmp_path / "c.jsonl")) == 2  # cached, not rerun
