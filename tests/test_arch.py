import json

import pytest

from hwnas.arch import ArchError, ArchSpec, BlockSpec, decode, encode, from_json, parse_arch

DESIGN_EXAMPLE = """
{"name": "optional",
 "input": {"channels": 3, "height": 224, "width": 224},
 "stem":  {"out": 32, "kernel": 3, "stride": 2},
 "blocks": [{"type": "ibn",       "kernel": 3, "expand": 6, "out": 24, "stride": 2},
            {"type": "fused_ibn", "kernel": 3, "expand": 4, "out": 24, "stride": 1},
            {"type": "conv",      "kernel": 3,              "out": 48, "stride": 2}],
 "head":  {"task": "classification", "features": 1280, "classes": 1000}}
"""


def test_design_json_accepted_as_written():
    arch = from_json(DESIGN_EXAMPLE)
    assert arch.name == "optional"
    assert [b.type for b in arch.blocks] == ["ibn", "fused_ibn", "conv"]
    assert arch.to_json() == json.loads(DESIGN_EXAMPLE)
    assert from_json(arch.to_json()) == arch


def test_string_round_trip_and_hashable():
    arch = from_json(DESIGN_EXAMPLE)
    text = encode(arch)
    assert text == ("optional:i3x224x224-stem_k3_c32_s2-ibn_k3_e6_c24_s2-"
                    "fused_ibn_k3_e4_c24_s1-conv_k3_c48_s2-cls_f1280_n1000")
    assert decode(text) == arch and parse_arch(text) == arch
    unnamed = arch.with_name("")
    assert decode(encode(unnamed)) == unnamed
    assert len({arch, decode(text), unnamed}) == 1


def test_name_is_a_label_not_part_of_equality():
    arch = from_json(DESIGN_EXAMPLE)
    other = arch.with_name("other")
    assert other == arch and hash(other) == hash(arch) and {arch: 1}[other] == 1
    assert encode(other).startswith("other:") and encode(arch).startswith("optional:")
    assert encode(arch.with_name("")) == encode(arch).removeprefix("optional:")
    assert other.to_json()["name"] == "other" and "name" not in arch.with_name("").to_json()


def test_decoded_strings_are_validated_like_json():
    with pytest.raises(ArchError, match="head.classes"):
        decode("i3x32x32-stem_k3_c16_s1-ibn_k3_e6_c24_s1-cls_f0_n0")


@pytest.mark.parametrize("expand", [2.5, 1.2345678, 64])
def test_fractional_expand_round_trips(expand):
    arch = from_json(DESIGN_EXAMPLE)
    blocks = (BlockSpec("ibn", 5, 40, 1, expand),) + arch.blocks
    arch = ArchSpec(stem=arch.stem, blocks=blocks, head=arch.head, input=arch.input)
    assert decode(encode(arch)) == arch
    assert f"ibn_k5_e{expand}_c40_s1" in encode(arch)


def test_residual_only_when_stride_1_and_same_width():
    arch = from_json(DESIGN_EXAMPLE)
    chans = arch.channels()
    assert chans == [32, 24, 24]
    assert [b.residual(c) for b, c in zip(arch.blocks, chans)] == [False, True, False]


def _mutated(path, value):
    data = json.loads(DESIGN_EXAMPLE)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize("path, value, message", [
    (("blocks", 1, "type"), "mbconv", r"blocks\[1\]\.type: unknown block type"),
    (("blocks", 0, "stride"), 3, r"blocks\[0\]\.stride: stride must be 1 or 2"),
    (("blocks", 2, "kernel"), 4, r"blocks\[2\]\.kernel: kernel must be odd"),
    (("blocks", 0, "expand"), 0.5, r"blocks\[0\]\.expand: must be between 1 and 64"),
    (("blocks", 1, "out"), 0, r"blocks\[1\]\.out: must be at least 1"),
    (("blocks", 1, "out"), -8, r"blocks\[1\]\.out"),
    (("stem", "out"), "32", r"stem\.out: must be an integer"),
    (("head", "task"), "captioning", r"head\.task: unknown task"),
    (("blocks", 0, "depth"), 2, r"blocks\[0\]: unknown field 'depth'"),
])
def test_invalid_architectures_name_block_and_field(path, value, message):
    with pytest.raises(ArchError, match=message):
        from_json(_mutated(path, value))


def test_input_too_small_for_strides():
    data = _mutated(("input", "height"), 4)
    data["input"]["width"] = 4
    with pytest.raises(ArchError, match=r"blocks\[2\]\.stride: input 4x4 is too small"):
        from_json(data)


@pytest.mark.parametrize("text, message", [
    ("{not json", "malformed JSON"),
    ("i3x32x32-stem_k3_c16_s1", "expected input, stem, blocks and head"),
    ("i3x32x32-stem_k3_c16_s1-ibn_k3_e6_c24_s1", "unknown head .ibn."),
    ("x3x32-stem_k3_c16_s1-ibn_k3_e6_c24_s1-cls_f0_n10", "bad input token"),
    ("i3x32x32-stem_k3_c16_s1-ibn_k3_c24_s1_e6-foo_f0_n10", "unknown head"),
    ("i3x32x32-stem_k3_c16_s1-ibn_k3_e6_s1-cls_f0_n10", "missing or bad field"),
])
def test_bad_strings(text, message):
    with pytest.raises(ArchError, match=message):
        parse_arch(text)


def test_missing_required_field():
    data = json.loads(DESIGN_EXAMPLE)
    del data["blocks"][0]["out"]
    with pytest.raises(ArchError, match=r"blocks\[0\]: missing field 'out'"):
        from_json(data)
