"""``params.yaml``: one typed schema for every section, checked before any stage runs.

Each stage reads its section merged under ``base`` (``section``). The schema refuses a
wrong type, an out-of-range value or an unknown key (a typo like ``search.candidatez``)
with one line naming the file and the dotted key; ``run_stage`` turns that into exit 2.
The dicts handed to stages are the file's own values (the schema checks, it does not
rewrite), so fingerprints of params stay what they were.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hwnas import layout
from hwnas.errors import UserError, read_yaml
from hwnas.tasks import TASKS

PARAMS_FILE = Path("params.yaml")


class ParamsError(UserError):
    """A missing or malformed params file or key; the message names it."""


class _Section(BaseModel):
    # strict: "six" is not an int and 1 is not a bool; ints are still fine where floats go
    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, v):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


MAX_SEED = 2**32 - 1  # what every RNG the seeds reach (numpy, torch, LightGBM) accepts
MAX_WORKERS = 1024    # threads or processes: more is a typo, not a machine
MAX_SAMPLES = 10_000_000  # microbenchmark units: sampling them alone outlasts any time budget

PosInt = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Workers = Annotated[int, Field(ge=1, le=MAX_WORKERS)]
Noise = Annotated[float, Field(ge=0, lt=1)]  # relative measurement noise of the simulator
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Share = Annotated[float, Field(ge=0, le=1)]
Resolution = Annotated[int, Field(ge=8, le=4096)]
BlockType = Literal["ibn", "fused_ibn", "conv"]
ScoreMode = Literal["supernet", "naswot", "synflow", "grad_norm"]  # how a search scores a network
SCORE_MODES = get_args(ScoreMode)


TaskName = Literal[tuple(TASKS)]  # type: ignore[valid-type]
StageTable = list[Annotated[list[PosInt], Field(min_length=3, max_length=3)]]


class _SpaceChoices(_Section):
    """The choices of a search space (``hwnas.space.SpaceConfig``) besides its input."""

    head_features: NonNegInt = 1280
    stem_stride: Literal[1, 2] = 1
    kernels: list[Literal[1, 3, 5, 7]] = Field(default=[3, 5, 7], min_length=1)
    expands: list[Annotated[float, Field(ge=1, le=8)]] = Field(default=[1, 3, 4, 6], min_length=1)
    types: list[BlockType] = Field(default=["ibn", "fused_ibn"], min_length=1)
    depth_multipliers: list[Annotated[float, Field(gt=0, le=4)]] = Field(
        default=[0.5, 0.75, 1.0, 1.25], min_length=1)
    width_range: Annotated[list[PosFloat], Field(min_length=2, max_length=2)] = [0.5, 1.5]
    # searched input resolutions and output strides (a segmentation head's); None: fixed
    resolutions: list[Resolution] | None = Field(default=None, min_length=1)
    out_strides: list[Literal[1, 2, 4, 8, 16, 32]] | None = Field(default=None, min_length=1)

    @field_validator("stages", check_fields=False)
    @classmethod
    def _strides(cls, v):
        for i, row in enumerate(v if isinstance(v, list) else ()):
            if row[2] not in (1, 2):
                raise ValueError(f"stage {i}: stride must be 1 or 2, got {row[2]}")
        return v


class SpaceParams(_SpaceChoices):
    """A space the estimator samples; ``stages`` 32 or 224 picks a base table."""

    resolution: Resolution = 32
    in_channels: PosInt = 1
    classes: PosInt = 10
    task: TaskName = "classification"
    stages: Literal[32, 224] | StageTable = 32  # [base channels, base depth, stride] per stage


class TrainSpaceParams(_SpaceChoices):
    """The supernet's space: input size and classes come from the data; the stage table
    is given in full (its widths are the baseline's)."""

    stages: StageTable


class Base(_Section):
    seed: Seed
    hardware: str

    @field_validator("hardware")
    @classmethod
    def _spec(cls, v: str) -> str:
        from hardware.spec import SpecError, load_spec

        try:
            spec = load_spec(v)
        except SpecError as err:
            raise ValueError(str(err)) from None
        if spec.name != v:  # artifacts are keyed by this value in dvc.yaml and the code
            raise ValueError(f"name a spec, not a file: put it at hardware/specs/{spec.name}.yaml "
                             f"and write 'hardware: {spec.name}'")
        return v


class References(_Section):
    noise: Noise


class _Measured(_Section):
    """Overrides for a measured target (``onnxruntime``): how it times, which spaces it samples."""

    repeats: PosInt | None = None
    warmup: NonNegInt | None = None
    min_repeat_ms: NonNegFloat | None = None
    clock: Literal["thread", "wall"] | None = None
    spaces: list[SpaceParams] | None = None


class MicrobenchMeasured(_Measured):
    units: Literal["profiled", "isolated"] | None = None
    network_share: Share | None = None
    samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES)] | None = None
    time_budget_s: PosFloat | None = None
    calibration_networks: NonNegInt | None = None
    max_block_macs: PosFloat | None = None


class Microbench(_Section):
    samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES)]
    time_budget_s: PosFloat
    repeats: PosInt
    noise: Noise
    network_share: Share
    neighbours: NonNegInt
    adaptive_share: Annotated[float, Field(ge=0, lt=1)]
    adaptive_top: Share
    spaces: list[SpaceParams] = Field(min_length=1)
    onnxruntime: MicrobenchMeasured = MicrobenchMeasured()


class TrainEstimatorMeasured(_Measured):
    eval_networks: PosInt | None = None


class TrainEstimator(_Section):
    n_estimators: PosInt
    learning_rate: PosFloat
    num_leaves: Annotated[int, Field(ge=2)]
    min_data_in_leaf: PosInt
    linear_tree: bool
    eval_networks: PosInt
    eval_seed: Seed
    references: bool
    spaces: list[SpaceParams] = Field(min_length=1)
    onnxruntime: TrainEstimatorMeasured = TrainEstimatorMeasured()


class Data(_Section):
    dataset: str
    resolution: Resolution
    val_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1  # a classifier's dataset is split;
    test_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.2  # a COCO root has its own splits
    channels: Literal[1, 3] = 1  # detection, segmentation: images read as grayscale or RGB
    classes: PosInt | None = None  # segmentation: the foreground classes of the masks

    @field_validator("test_fraction")
    @classmethod
    def _fractions(cls, v: float, info) -> float:
        if v + info.data.get("val_fraction", 0.0) >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1")
        return v


class Train(_Section):
    """``hwnas.training.TrainConfig``: the supernet's and every from-scratch run's recipe."""

    epochs: PosInt
    batch_size: PosInt
    lr: PosFloat
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: NonNegFloat
    warmup_epochs: NonNegFloat
    label_smoothing: Annotated[float, Field(ge=0, lt=1)]
    num_random: NonNegInt
    extremes: Literal["fixed", "cycle", "random", "all"]
    distill: bool
    max_shift: NonNegInt
    grad_clip: NonNegFloat
    clip_per_subnet: bool
    distill_stages: NonNegFloat
    stage_regressor: bool
    teacher_weight: PosFloat
    optimizer: Literal["sgd", "adamw"] = "sgd"
    bf16: bool = False


class CudaRecipe(_Section):
    """Overrides of ``train`` where ``device`` is cuda: the recipe on a GPU."""

    epochs: PosInt | None = None
    batch_size: PosInt | None = None
    lr: PosFloat | None = None
    warmup_epochs: NonNegFloat | None = None
    bf16: bool | None = None


class TrainSupernet(_Section):
    task: TaskName = "classification"
    device: Annotated[str, Field(pattern=r"^(cpu|cuda(:\d+)?)$")]
    threads: Workers | None
    calib_batches: PosInt
    kernel_transform: bool
    data: Data
    space: TrainSpaceParams
    train: Train
    cuda: CudaRecipe = CudaRecipe()


class EvalSupernet(_Section):
    subnets: Annotated[int, Field(ge=2)]
    candidates: PosInt
    eval_split: Literal["val", "test", "val+test"]
    probes: bool
    scratch_seeds: PosInt
    seed: Seed | None = None


class Search(_Section):
    score: ScoreMode
    candidates: PosInt
    population: Annotated[int, Field(ge=2)]
    max_latency_ms: PosFloat | None
    latency_budget: PosFloat | None
    score_tie: NonNegFloat | None
    confirm: NonNegInt
    confirm_seeds: PosInt
    family: list[Annotated[float, Field(gt=0, lt=1)]] = Field(max_length=10)
    memory_budget: PosFloat | None
    calib_images: PosInt
    val_images: PosInt
    workers: Workers

    @field_validator("family")
    @classmethod
    def _distinct(cls, v: list[float]) -> list[float]:
        if len(set(v)) != len(v):  # a repeated cut would leave an empty band
            raise ValueError(f"cuts must differ, got {v}")
        return v


class Extract(_Section):
    # the latency and memory models, and the members of a family (``search.family``)
    chosen: list[Annotated[str, Field(pattern="^(latency|memory|[A-J])$")]] = Field(min_length=1)
    pareto_extra: NonNegInt
    baseline: bool
    scratch: bool
    epochs: NonNegInt
    lr: PosFloat
    onnx_tolerance: PosFloat
    onnx_check_images: PosInt


class Baseline(_Section):
    epochs: PosInt | None
    seeds: PosInt


class Targets(_Section):
    """What the evaluation calls met: the chosen models' reductions at a score drop."""

    latency_reduction: Share
    latency_score_drop: NonNegFloat
    memory_reduction: Share
    memory_score_drop: NonNegFloat
    # a family (``search.family``): its latency reductions span at least from the first to
    # the second, each member within ``family_score_drop`` points of the baseline
    family_span: Annotated[list[Share], Field(min_length=2, max_length=2)] = [0.27, 0.51]
    family_score_drop: NonNegFloat = 1.0


class EvaluateMeasure(_Section):
    """How evaluate times the models on a measured target (``hwnas.estimator.onnxrt``)."""

    rounds: Annotated[int, Field(ge=2, le=20)]  # two at least: their spread is reported
    repeats: PosInt
    warmup: NonNegInt
    min_repeat_ms: NonNegFloat
    clock: Literal["thread", "wall"]


class Evaluate(_Section):
    equal_score_tolerance: NonNegFloat
    non_inferiority_margin: NonNegFloat
    targets: Targets
    measure: EvaluateMeasure


class CodesignGrid(_Section):
    """The axes of the co-design grid (``hwnas.codesign.grid`` checks the specs they make)."""

    mac_array: list[int] = Field(min_length=1)
    vector_lanes: list[int] = Field(min_length=1)
    sram_kib: list[float] = Field(min_length=1)
    dram_bandwidth_gb_s: list[float] = Field(min_length=1)
    fusion: list[bool] = Field(min_length=1)


class CodesignCost(_Section):
    mac_mm2: PosFloat
    lane_mm2: PosFloat
    sram_kib_mm2: PosFloat


class CodesignMicrobench(_Section):
    samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES)]
    time_budget_s: PosFloat


class Codesign(_Section):
    tasks: list[TaskName]  # the studies that dvc.yaml holds (hwnas codesign adds its task)
    base: str
    grid: CodesignGrid
    cost: CodesignCost
    area_budget_mm2: PosFloat
    microbench: CodesignMicrobench
    eval_networks: Annotated[int, Field(ge=3)]


class FindingsCuration(_Section):
    seeds: Annotated[int, Field(ge=2)]
    candidates: PosInt
    population: Annotated[int, Field(ge=2)]


class FindingsZeroShot(_Section):
    networks: Annotated[int, Field(ge=4)]  # trained from scratch to rank the proxies
    seeds: Annotated[int, Field(ge=2)]  # two at least: one seed's ranking against another's
    pool: PosInt
    keep: Annotated[int, Field(ge=2)]
    confirm: NonNegInt


class Findings(_Section):
    tasks: list[TaskName]  # the tasks whose findings dvc.yaml holds (hwnas findings adds one)
    candidates: PosInt
    population: Annotated[int, Field(ge=2)]
    rules_from: list[TaskName]
    curation: FindingsCuration
    zeroshot: FindingsZeroShot


class Scenes(_Section):
    """A task's scene generator (detection's ``SceneConfig``, segmentation's
    ``SegmentationScenes``, which check every field when the data stage runs)."""

    model_config = ConfigDict(extra="allow", strict=True)


class Params(_Section):
    """Every section, every key: ``params.yaml`` is the whole configuration. A task's section
    (``detection:``) overrides the shared sections for that task's pipeline."""

    base: Base
    tasks: list[TaskName] = Field(default=["classification"], min_length=1)
    classification: dict = {}
    detection: dict = {}
    segmentation: dict = {}
    scenes: Scenes | None = None
    host_targets: list[Literal[layout.HOST_TARGETS]]
    references: References
    microbench: Microbench
    train_estimator: TrainEstimator
    train_supernet: TrainSupernet
    eval_supernet: EvalSupernet
    search: Search
    extract: Extract
    baseline: Baseline
    evaluate: Evaluate
    codesign: Codesign  # dvc.yaml's matrix reads its grid
    findings: Findings

    @field_validator("host_targets")
    @classmethod
    def _not_the_base(cls, v: list, info):
        base = info.data.get("base")
        if base is not None and base.hardware in v:  # both stages would write its estimator
            raise ValueError(f"{base.hardware} is base.hardware: the microbench and "
                             f"train_estimator stages measure it already; leave it out here")
        return v


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def validation_message(err: ValidationError, path: str | Path) -> str:
    """A pydantic error as one line: the file, the dotted key, what is wrong."""
    e = err.errors()[0]
    key = _where(e["loc"])
    if e["type"] == "extra_forbidden":
        return f"{path}: {key}: unknown key"
    if e["type"] == "missing":
        return f"{path}: {key}: missing"
    got = e.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return f"{path}: {key}: {e['msg'].removeprefix('Value error, ')} (got {shown[:80]})"


def validate_params(params: dict, path: str | Path = PARAMS_FILE) -> dict:
    """Check every section against the schema; raises ParamsError naming the dotted key."""
    try:
        Params.model_validate(params)
    except ValidationError as err:
        raise ParamsError(validation_message(err, path)) from None
    return params


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def task_params(params: dict, task: str) -> dict:
    """The params of ``task``'s pipeline: its section merged over the shared ones."""
    return _merged(params, params.get(task) or {})


def load_params(path: str | Path = PARAMS_FILE, task: str | None = None) -> dict:
    """The file's values for ``task`` (default: the task this process works for, see
    ``hwnas.layout.use_task``), after the schema has accepted them for every task."""
    path = Path(path)
    data = read_yaml(path, ParamsError)
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    validate_params(data, path)
    for name in get_args(TaskName):
        if data.get(name):
            try:
                Params.model_validate(task_params(data, name))
            except ValidationError as err:
                raise ParamsError(validation_message(err, path).replace(
                    f"{path}: ", f"{path}: {name} (merged over the shared sections): ", 1)) from None
    return task_params(data, task or layout.current_task())


def section(params: dict, name: str) -> dict:
    """``base`` merged under the named section (the section wins)."""
    return {**params["base"], **(params.get(name) or {})}


def backend_section(params: dict, name: str, backend: str) -> dict:
    """``section`` with the backend's own overrides (``onnxruntime:``) applied."""
    p = section(params, name)
    overrides = {b: p.pop(b, None) or {} for b in layout.HOST_TARGETS}
    p.update(overrides.get(backend, {}))
    return p


def enable_task(task: str, path: str | Path = PARAMS_FILE, where: str = "tasks") -> bool:
    """Add ``task`` to the file's list at the dotted key ``where`` (``tasks``, or
    ``codesign.tasks``), comments kept; False if it was there."""
    if task not in get_args(TaskName):
        raise ParamsError(f"--task: unknown task {task!r} (known: {', '.join(get_args(TaskName))})")
    from ruamel.yaml import YAML

    yaml = YAML()
    path = Path(path)
    data = yaml.load(path.read_text())
    names = data
    for key in where.split("."):
        names = names.get(key) if hasattr(names, "get") else None
    if names is None or task in names:
        return False
    names.append(task)
    from hwnas.files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as f:
        yaml.dump(data, f)
    return True


def task_arg(argv: list[str]) -> str:
    """``--task NAME`` of a stage's command line (default: classification)."""
    if "--task" not in argv:
        return layout.DEFAULT_TASK
    i = argv.index("--task")
    name = argv[i + 1] if i + 1 < len(argv) else ""
    if name not in get_args(TaskName):
        raise ParamsError(f"--task: unknown task {name!r} (known: {', '.join(get_args(TaskName))})")
    return name


def run_stage(name: str, main: Callable[[], None]) -> None:
    """A stage's entry point: bad input (params, data, a spec, an artifact) exits 2 with
    one line naming it, and no traceback."""
    from hardware.spec import SpecError

    try:
        layout.use_task(task_arg(sys.argv[1:]))
        main()
    except (UserError, SpecError) as err:
        print(f"{name}: {err}", file=sys.stderr)
        sys.exit(2)
