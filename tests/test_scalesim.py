"""Our compute cycles against SCALE-Sim 3.0, the public cycle-accurate systolic-array simulator.

SCALE-Sim's compute model (``systolic_compute_os``) turns a layer into demand matrices with
one row per cycle: per fold of R x C outputs, T = k*k*in operands stream in, then R + C - 2
cycles of skew fill and drain. Their row count is ``ceil(M/R) * ceil(N/C) * (T + R + C - 2)``,
exactly our ``compute_cycles``. Its report's "Total Cycles" column is one less: it is the
0-based index of the last cycle (``max`` over the cycles the outputs are written in, counted
from 0), so with no stalls ``ours == reported + 1``. SCALE-Sim's own per-fold utilization
divides by T + R + C - 2 cycles, the same count as ours.

Inputs: SCALE-Sim convolves without padding (output = ceil((H - k + s) / s)), so each layer
gets the input our "same" padding produces, H_pad = (out - 1) * s + k. Depthwise is a
"DP" layer, which SCALE-Sim splits into one single-channel, single-filter layer per channel.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from hardware.graph import Op
from hardware.simulator import simulate_op
from hardware.spec import load_spec, spec_from_dict

SPEC = load_spec("neural-engine-32")
ARRAY_DW_SPEC = spec_from_dict({**SPEC.model_dump(), "depthwise_on": "array"})

CONFIG = """\
[general]
run_name = hwnas

[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = 1024
FilterSramSzkB = 1024
OfmapSramSzkB = 1024
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = os
Bandwidth = 10
ReadRequestBuffer = 32
WriteRequestBuffer = 32

[layout]
IfmapCustomLayout = False
IfmapSRAMBankBandwidth = 10
IfmapSRAMBankNum = 10
IfmapSRAMBankPort = 2
FilterCustomLayout = False
FilterSRAMBankBandwidth = 10
FilterSRAMBankNum = 10
FilterSRAMBankPort = 2

[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 8
RandomNumberGeneratorSeed = 40

[run_presets]
InterfaceBandwidth = CALC
UseRamulatorTrace = False
"""

# name, kind, in_h, in_w, in_c, out_c, kernel, stride: channel counts on and off multiples
# of 32, spatial sizes on and off multiples of 32 output pixels.
DENSE = [
    Op("pw_aligned", "conv", 8, 8, 32, 64, 1, 1),
    Op("pw_ragged", "conv", 7, 7, 24, 40, 1, 1),
    Op("pw_s2", "conv", 10, 10, 8, 40, 1, 2),
    Op("c3_aligned", "conv", 8, 8, 16, 32, 3, 1),
    Op("c3_ragged", "conv", 6, 10, 33, 65, 3, 1),
    Op("c3_s2_odd", "conv", 9, 9, 16, 48, 3, 2),
    Op("c3_s2", "conv", 8, 8, 32, 24, 3, 2),
    Op("c5_s2", "conv", 7, 7, 8, 16, 5, 2),
    Op("fc", "fc", 1, 1, 96, 10, 1, 1),
]
DEPTHWISE = [
    Op("dw3", "depthwise", 8, 8, 6, 6, 3, 1),
    Op("dw3_s2", "depthwise", 9, 9, 5, 5, 3, 2),
]


def _padded(out: int, op: Op) -> int:
    """The input size whose unpadded convolution gives ``out`` outputs."""
    return (out - 1) * op.stride + op.kernel


def write_scalesim_inputs(ops: list[Op], folder: Path, rows: int = 32, cols: int = 32):
    """Config, topology and layout files for ``ops`` (SCALE-Sim reads only files).
    Returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    topo = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
            "Channels, Num Filter, Strides,"]
    for op in ops:
        assert "DP" not in op.name, "SCALE-Sim reads 'DP' in a layer name as depthwise"
        name, filters = (op.name + "DP", 1) if op.kind == "depthwise" else (op.name, op.out_c)
        topo.append(f"{name}, {_padded(op.out_h, op)}, "
                    f"{_padded(op.out_w, op)}, {op.kernel}, {op.kernel}, "
                    f"{op.in_c}, {filters}, {op.stride},")
    # Custom layouts are off, but SCALE-Sim still parses a layout row per layer.
    layout = ["Layer name, factors and orders,"]
    layout += [line.split(",")[0] + ", 1" * 20 + "," for line in topo[1:]]
    paths = folder / "scalesim.cfg", folder / "topology.csv", folder / "layout.csv"
    paths[0].write_text(CONFIG.format(rows=rows, cols=cols))
    paths[1].write_text("\n".join(topo) + "\n")
    paths[2].write_text("\n".join(layout) + "\n")
    return paths


def scalesim_compute_cycles(ops: list[Op], folder: Path) -> list[int]:
    """SCALE-Sim's compute-only path: operand matrices, then the output-stationary demand
    matrices, one row per cycle. One count per SCALE-Sim layer (a depthwise op is one
    layer per channel)."""
    from scalesim.compute.operand_matrix import operand_matrix
    from scalesim.compute.systolic_compute_os import systolic_compute_os
    from scalesim.layout_utils import layouts
    from scalesim.scale_config import scale_config
    from scalesim.topology_utils import topologies

    config_path, topo_path, layout_path = write_scalesim_inputs(ops, folder)
    config, topo, layout = scale_config(), topologies(), layouts()
    config.read_conf_file(str(config_path))
    topo.load_arrays(str(topo_path))
    layout.load_arrays(str(layout_path))
    cycles = []
    for layer in range(topo.get_num_layers()):
        operands = operand_matrix()
        operands.set_params(config_obj=config, topoutil_obj=topo, layoututil_obj=layout,
                            layer_id=layer)
        compute = systolic_compute_os()
        compute.set_params(config_obj=config, ifmap_op_mat=operands.get_ifmap_matrix()[1],
                           filter_op_mat=operands.get_filter_matrix()[1],
                           ofmap_op_mat=operands.get_ofmap_matrix()[1])
        ifmap, filters, ofmap = compute.get_demand_matrices()
        assert ifmap.shape[0] == filters.shape[0] == ofmap.shape[0]
        cycles.append(ofmap.shape[0])
    return cycles


def scalesim_full_run(ops: list[Op], folder: Path) -> list[list[float]]:
    """SCALE-Sim's full simulation (memory system included, no trace files). Returns each
    layer's compute-report row: total cycles incl. prefetch, total cycles, stall cycles,
    overall util %, mapping efficiency %, compute util %."""
    from scalesim.scale_sim import scalesim

    config, topo, layout = write_scalesim_inputs(ops, folder)
    sim = scalesim(save_disk_space=True, verbose=False, config=str(config),
                   topology=str(topo), layout=str(layout))
    sim.run_scale(top_path=str(folder / "out"))
    report = (folder / "out" / "hwnas" / "COMPUTE_REPORT.csv").read_text().splitlines()
    return [[float(x) for x in line.split(",")[1:-1]] for line in report[1:]]


def test_padding_gives_scalesim_our_same_output_size():
    from scalesim.topology_utils import topologies

    topo = topologies()
    for op in DENSE + DEPTHWISE:
        h, w = _padded(op.out_h, op), _padded(op.out_w, op)
        topo.load_layer_params_from_list(op.name, [op.name, h, w, op.kernel, op.kernel,
                                                   op.in_c, op.out_c, op.stride, op.stride, 1, 1])
    topo.topo_calc_hyperparams()
    for layer, op in enumerate(DENSE + DEPTHWISE):
        assert tuple(topo.get_layer_ofmap_dims(layer)) == (op.out_h, op.out_w), op.name


def test_dense_compute_cycles_equal_scalesim(tmp_path):
    theirs = scalesim_compute_cycles(DENSE, tmp_path)
    ours = [simulate_op(op, SPEC).compute_cycles for op in DENSE]
    assert ours == theirs


def test_depthwise_on_array_equals_scalesim_per_channel_layers(tmp_path):
    theirs = scalesim_compute_cycles(DEPTHWISE, tmp_path)
    per_op, start = [], 0
    for op in DEPTHWISE:  # SCALE-Sim runs one layer per channel, in order
        per_op.append(sum(theirs[start:start + op.in_c]))
        start += op.in_c
    assert start == len(theirs)
    assert [simulate_op(op, ARRAY_DW_SPEC).compute_cycles for op in DEPTHWISE] == per_op


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:scalesim")
def test_full_scalesim_run_reports_our_cycles_minus_one(tmp_path):
    ops = [DENSE[4]]  # 3x3, 33 -> 65 channels: ragged on both array dimensions
    (row,) = scalesim_full_run(ops, tmp_path)
    _, total, stalls, *_ = row
    assert stalls == 0  # CALC bandwidth mode: the memory system never stalls the array
    # "Total Cycles" is the index of the last cycle, counted from 0
    assert simulate_op(ops[0], SPEC).compute_cycles == total + 1
