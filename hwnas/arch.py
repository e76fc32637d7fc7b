"""Architectures as data: frozen, hashable specs with a JSON form and a compact string.

``ArchSpec.name`` is a label: it is in both forms but not in equality or the hash, so
networks compare and key by structure alone.

JSON (the canonical form; the README shows it):
    {"name": "optional", "input": {"channels": 3, "height": 224, "width": 224},
     "stem": {"out": 32, "kernel": 3, "stride": 2},
     "blocks": [{"type": "ibn", "kernel": 3, "expand": 6, "out": 24, "stride": 2}, ...],
     "head": {"task": "classification", "features": 1280, "classes": 1000}}

String (the ID in logs, MLflow and lookup keys; ``decode(encode(a)) == a``):
    [name:]i3x224x224-stem_k3_c32_s2-ibn_k3_e6_c24_s2-fused_ibn_k3_e4_c24_s1-conv_k3_c48_s2-cls_f1280_n1000
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from math import ceil
from typing import ClassVar

from hwnas.errors import UserError

BLOCK_TYPES = ("ibn", "fused_ibn", "conv")
# Size limits, generous for real networks (224-1024 px inputs, a few thousand channels,
# kernels up to 7, or 31 in large-kernel designs); beyond them an architecture is refused
# with the field named, before any size overflows a cost or a tensor.
MAX_EXPAND = 64
MAX_RESOLUTION = 4096   # input height and width, pixels
MAX_CHANNELS = 65536    # any channel count (input, stem, block out, expanded width, head)
MAX_CLASSES = 65536
MAX_KERNEL = 31
MAX_BLOCKS = 512
MAX_TOTAL_STRIDE = 64  # a head's feature-map stride


class ArchError(UserError):
    """An invalid architecture; the message names the block and field."""


def check_int(value, where: str, minimum: int = 1, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchError(f"{where}: must be an integer, got {value!r}")
    if value < minimum:
        raise ArchError(f"{where}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ArchError(f"{where}: must be at most {maximum}, got {value:.6g}")
    return value


def check_channels(value, where: str) -> int:
    return check_int(value, where, 1, MAX_CHANNELS)


def _number(value, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArchError(f"{where}: must be a number, got {value!r}")
    return int(value) if float(value).is_integer() else float(value)


def check_kernel(value, where: str) -> int:
    value = check_int(value, where, 1, MAX_KERNEL)
    if value % 2 == 0:
        raise ArchError(f"{where}: kernel must be odd, got {value}")
    return value


def check_stride(value, where: str) -> int:
    value = check_int(value, where)
    if value not in (1, 2):
        raise ArchError(f"{where}: stride must be 1 or 2, got {value}")
    return value


def check_total_stride(value, where: str) -> int:
    """A stride a head reads or writes at: a power of 2 (a product of 1s and 2s)."""
    value = check_int(value, where, 1, MAX_TOTAL_STRIDE)
    if value & (value - 1):
        raise ArchError(f"{where}: must be a power of 2 (the product of the stem's and "
                        f"blocks' strides), got {value}")
    return value


def _fields(data, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(data, dict):
        raise ArchError(f"{where}: must be an object, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ArchError(f"{where}: missing field '{missing[0]}'")
    unknown = [k for k in data if k not in required + optional]
    if unknown:
        raise ArchError(f"{where}: unknown field '{unknown[0]}'")
    return data


@dataclass(frozen=True, slots=True)
class InputSpec:
    channels: int = 3
    height: int = 224
    width: int = 224


@dataclass(frozen=True, slots=True)
class StemSpec:
    out: int
    kernel: int = 3
    stride: int = 2


@dataclass(frozen=True, slots=True)
class BlockSpec:
    type: str
    kernel: int
    out: int
    stride: int = 1
    expand: int | float = 1

    def mid(self, in_channels: int) -> int:
        return max(1, round(in_channels * self.expand))

    def residual(self, in_channels: int) -> bool:
        return self.type != "conv" and self.stride == 1 and in_channels == self.out

    def to_json(self) -> dict:
        out = {"type": self.type, "kernel": self.kernel}
        if self.type != "conv":
            out["expand"] = self.expand
        out.update(out=self.out, stride=self.stride)
        return out

    def encode(self) -> str:
        e = "" if self.type == "conv" else f"_e{self.expand}"
        return f"{self.type}_k{self.kernel}{e}_c{self.out}_s{self.stride}"


# ---- heads: a registry keyed by ``head.task`` so new tasks plug in ----------

HEADS: dict[str, type] = {}


def register_head(cls):
    HEADS[cls.task] = cls
    return cls


@register_head
@dataclass(frozen=True, slots=True)
class ClassificationHead:
    task: ClassVar[str] = "classification"
    code: ClassVar[str] = "cls"
    searched_width: ClassVar[bool] = False  # a space keeps the head's width fixed
    features: int = 1280  # 1x1 conv before pooling; 0 = none
    classes: int = 1000

    @classmethod
    def for_space(cls, features: int, classes: int, stride: int) -> "ClassificationHead":
        """The head of a search space (a classifier pools: the stride does not matter)."""
        return cls(features, classes)

    @classmethod
    def from_json(cls, data: dict, where: str) -> "ClassificationHead":
        _fields(data, where, ("task", "classes"), ("features",))
        return cls(features=check_int(data.get("features", 0), f"{where}.features", 0, MAX_CHANNELS),
                   classes=check_int(data["classes"], f"{where}.classes", 1, MAX_CLASSES))

    def validate(self) -> None:
        check_int(self.features, "head.features", 0, MAX_CHANNELS)
        check_int(self.classes, "head.classes", 1, MAX_CLASSES)

    def to_json(self) -> dict:
        return {"task": self.task, "features": self.features, "classes": self.classes}

    def encode(self) -> str:
        return f"{self.code}_f{self.features}_n{self.classes}"

    @classmethod
    def decode(cls, fields: dict[str, str]) -> "ClassificationHead":
        return cls(features=int(fields["f"]), classes=int(fields["n"]))


@dataclass(frozen=True, slots=True)
class ArchSpec:
    stem: StemSpec
    blocks: tuple[BlockSpec, ...]
    head: ClassificationHead = field(default_factory=ClassificationHead)
    input: InputSpec = field(default_factory=InputSpec)
    name: str = field(default="", compare=False)

    def channels(self) -> list[int]:
        """Input channel count of each block."""
        chans, c = [], self.stem.out
        for b in self.blocks:
            chans.append(c)
            c = b.out
        return chans

    @property
    def last_channels(self) -> int:
        return self.blocks[-1].out if self.blocks else self.stem.out

    def with_name(self, name: str) -> "ArchSpec":
        return replace(self, name=name)

    def resolution_and_stride(self) -> tuple[int, int | None]:
        """The input resolution and the head's output stride (None: a head without one)."""
        return self.input.height, getattr(self.head, "out_stride", None)

    def at_resolution(self, resolution: int, out_stride: int | None) -> "ArchSpec":
        """The same blocks and head width reading ``resolution`` px (square) and, for a head
        with an output stride, writing at ``out_stride``."""
        head = self.head if out_stride is None else replace(self.head, out_stride=out_stride)
        return validate(replace(self, input=replace(self.input, height=resolution,
                                                    width=resolution), head=head))

    def to_json(self) -> dict:
        out = {"name": self.name} if self.name else {}
        out.update(
            input={"channels": self.input.channels, "height": self.input.height,
                   "width": self.input.width},
            stem={"out": self.stem.out, "kernel": self.stem.kernel, "stride": self.stem.stride},
            blocks=[b.to_json() for b in self.blocks],
            head=self.head.to_json())
        return out

    def encode(self) -> str:
        return encode(self)

    @property
    def key(self) -> str:
        """The compact string without the name: the network's own ID in lookup keys."""
        return _body(self)


# ---- validation and parsing ------------------------------------------------


def validate(arch: ArchSpec) -> ArchSpec:
    """Check every field; return the arch unchanged or raise ArchError."""
    check_channels(arch.input.channels, "input.channels")
    check_int(arch.input.height, "input.height", 1, MAX_RESOLUTION)
    check_int(arch.input.width, "input.width", 1, MAX_RESOLUTION)
    check_channels(arch.stem.out, "stem.out")
    if len(arch.blocks) > MAX_BLOCKS:
        raise ArchError(f"blocks: at most {MAX_BLOCKS} blocks, got {len(arch.blocks)}")
    check_kernel(arch.stem.kernel, "stem.kernel")
    check_stride(arch.stem.stride, "stem.stride")
    if arch.name and (":" in arch.name or any(ch.isspace() for ch in arch.name)):
        raise ArchError(f"name: must not contain ':' or spaces, got {arch.name!r}")
    h, w = arch.input.height, arch.input.width
    h, w = ceil(h / arch.stem.stride), ceil(w / arch.stem.stride)
    stride = arch.stem.stride
    for i, (b, cin) in enumerate(zip(arch.blocks, arch.channels())):
        where = f"blocks[{i}]"
        if b.type not in BLOCK_TYPES:
            raise ArchError(f"{where}.type: unknown block type {b.type!r} "
                            f"(known: {', '.join(BLOCK_TYPES)})")
        check_kernel(b.kernel, f"{where}.kernel")
        check_channels(b.out, f"{where}.out")
        check_stride(b.stride, f"{where}.stride")
        expand = _number(b.expand, f"{where}.expand")
        if not 1 <= expand <= MAX_EXPAND:
            raise ArchError(f"{where}.expand: must be between 1 and {MAX_EXPAND}, got {expand}")
        if b.type == "conv" and expand != 1:
            raise ArchError(f"{where}.expand: a conv block has no expansion, got {expand}")
        if b.mid(cin) > MAX_CHANNELS:
            raise ArchError(f"{where}.expand: expanded width {cin} x {expand} = {b.mid(cin)} "
                            f"channels, at most {MAX_CHANNELS}")
        if b.stride == 2 and (h < 2 or w < 2):
            raise ArchError(f"{where}.stride: input {arch.input.height}x{arch.input.width} is "
                            f"too small for the strides up to here (feature map is {h}x{w})")
        h, w = ceil(h / b.stride), ceil(w / b.stride)
        stride *= b.stride
    head_cls = HEADS.get(getattr(arch.head, "task", None))
    if head_cls is None or not isinstance(arch.head, head_cls):
        raise ArchError(f"head.task: unknown task (known: {', '.join(HEADS)})")
    arch.head.validate()
    head_stride = getattr(arch.head, "stride", None)  # a head that reads a feature map
    if head_stride is not None and head_stride != stride:
        raise ArchError(f"head.stride: the head expects a stride-{head_stride} feature map, "
                        f"the stem and blocks give stride {stride}")
    return arch


def from_json(data) -> ArchSpec:
    """Parse the JSON form (a dict or a JSON string) into a validated ArchSpec."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise ArchError(f"malformed JSON: {err}") from None
    _fields(data, "architecture", ("stem", "blocks", "head"), ("name", "input"))
    inp = _fields(data.get("input", {}), "input", (), ("channels", "height", "width"))
    stem = _fields(data["stem"], "stem", ("out",), ("kernel", "stride"))
    if not isinstance(data["blocks"], list):
        raise ArchError("blocks: must be a list")
    blocks = []
    for i, b in enumerate(data["blocks"]):
        where = f"blocks[{i}]"
        b = _fields(b, where, ("type", "kernel", "out"), ("expand", "stride"))
        blocks.append(BlockSpec(type=b["type"], kernel=b["kernel"], out=b["out"],
                                stride=b.get("stride", 1),
                                expand=_number(b.get("expand", 1), f"{where}.expand")))
    head = data["head"]
    task = head.get("task") if isinstance(head, dict) else None
    if task not in HEADS:
        raise ArchError(f"head.task: unknown task {task!r} (known: {', '.join(HEADS)})")
    name = data.get("name", "")
    if not isinstance(name, str):
        raise ArchError(f"name: must be a string, got {name!r}")
    arch = ArchSpec(
        name=name,
        input=InputSpec(channels=inp.get("channels", 3), height=inp.get("height", 224),
                        width=inp.get("width", 224)),
        stem=StemSpec(out=stem["out"], kernel=stem.get("kernel", 3), stride=stem.get("stride", 2)),
        blocks=tuple(blocks),
        head=HEADS[task].from_json(head, "head"))
    return validate(arch)


@lru_cache(maxsize=65536)
def _block_code(block: BlockSpec) -> str:
    """Memoized: a batch of thousands of networks repeats a few hundred blocks, and the
    estimator encodes every network it returns."""
    return block.encode()


def _body(arch: ArchSpec) -> str:
    i = arch.input
    parts = [f"i{i.channels}x{i.height}x{i.width}",
             f"stem_k{arch.stem.kernel}_c{arch.stem.out}_s{arch.stem.stride}"]
    parts += [_block_code(b) for b in arch.blocks]
    parts.append(arch.head.encode())
    return "-".join(parts)


def encode(arch: ArchSpec) -> str:
    body = _body(arch)
    return f"{arch.name}:{body}" if arch.name else body


_TOKEN = re.compile(r"^([a-z_]+?)((?:_[a-z]+[0-9.]{1,12})+)$")  # 12 digits: past every limit
_FIELD = re.compile(r"_([a-z]+)([0-9.]{1,12})")


def _split_token(token: str) -> tuple[str, dict[str, str]]:
    m = _TOKEN.match(token)
    if not m:
        raise ArchError(f"cannot parse {token[:60]!r}")
    return m.group(1), dict(_FIELD.findall(m.group(2)))


def decode(text: str) -> ArchSpec:
    """Parse the compact string form; raises ArchError naming the bad token."""
    name, sep, body = text.strip().rpartition(":")
    tokens = body.split("-")
    if len(tokens) < 3:
        raise ArchError(f"architecture string {text!r}: expected input, stem, blocks and head")
    m = re.fullmatch(r"i(\d+)x(\d+)x(\d+)", tokens[0])
    if not m:
        raise ArchError(f"architecture string: bad input token {tokens[0][:40]!r} "
                        "(e.g. i3x224x224)")
    for key, digits in zip(("channels", "height", "width"), m.groups()):
        if len(digits) > 12:  # past every limit (and int() refuses thousands of digits)
            raise ArchError(f"input.{key}: a {len(digits)}-digit number is out of range")
    inp = InputSpec(*(int(g) for g in m.groups()))
    try:
        kind, f = _split_token(tokens[1])
        if kind != "stem":
            raise ArchError(f"expected a stem token, got {tokens[1]!r}")
        stem = StemSpec(out=int(f["c"]), kernel=int(f["k"]), stride=int(f["s"]))
        blocks = []
        for i, tok in enumerate(tokens[2:-1]):
            kind, f = _split_token(tok)
            expand = _number(float(f.get("e", 1)), f"blocks[{i}].expand")
            blocks.append(BlockSpec(type=kind, kernel=int(f["k"]), out=int(f["c"]),
                                    stride=int(f["s"]), expand=expand))
        code, f = _split_token(tokens[-1])
        heads = {h.code: h for h in HEADS.values()}
        if code not in heads:
            raise ArchError(f"unknown head {code!r} (known: {', '.join(heads)})")
        head = heads[code].decode(f)
    except (KeyError, ValueError) as err:
        if isinstance(err, ArchError):
            raise ArchError(f"architecture string: {err}") from None
        raise ArchError(f"architecture string {text!r}: missing or bad field {err}") from None
    return validate(ArchSpec(stem=stem, blocks=tuple(blocks), head=head, input=inp, name=name))


def parse_arch(text: str) -> ArchSpec:
    """A JSON object or a compact string (the CLI's inline ARCH forms)."""
    text = text.strip()
    return from_json(text) if text.startswith("{") else decode(text)


# The tasks' heads register into HEADS (and their ops into hwnas.lowering.HEAD_OPS) when
# hwnas.lowering loads (its last line), so every import of hwnas.arch knows them.
import hwnas.lowering  # noqa: E402,F401
