import pytest
import yaml

from hardware.spec import SpecError, available_specs, load_spec, spec_from_dict


@pytest.mark.parametrize("name", ["neural-engine-32", "neural-engine-64", "edge-16"])
def test_bundled_specs_load(name):
    spec = load_spec(name)
    assert spec.name == name
    assert spec.parallelism == spec.mac_array.cols
    assert spec.sram_bytes > 0 and spec.dram_bytes_per_cycle > 0


def test_default_spec_is_32_wide_int8():
    spec = load_spec()
    assert spec.name == "neural-engine-32"
    assert (spec.mac_array.rows, spec.mac_array.cols, spec.bytes_per_element) == (32, 32, 1)
    assert set(available_specs()) >= {"neural-engine-32", "neural-engine-64", "edge-16"}


def _write(tmp_path, mutate):
    data = yaml.safe_load(load_spec().model_dump_json())
    mutate(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("clock_mhz"), "clock_mhz"),
    (lambda d: d["mac_array"].update(rows=0), "mac_array.rows"),
    (lambda d: d.update(sram_kib=-1), "sram_kib"),
    (lambda d: d.update(dataflow="weight_stationary"), "dataflow"),
    (lambda d: d.update(turbo=True), "turbo"),
    (lambda d: d["energy"].pop("dram_byte_pj"), "energy.dram_byte_pj"),
    (lambda d: d.update(fusion=[["conv", "softmax"]]), "fusion"),
    # a 64x64 array works from 64x64 outputs plus 64 + 64 operands: 4,224 bytes
    (lambda d: d.update(mac_array={"rows": 64, "cols": 64}, sram_kib=4), "sram_kib"),
])
def test_invalid_spec_names_file_and_field(tmp_path, mutate, field):
    path = _write(tmp_path, mutate)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and f"'{field}" in str(err.value)


def test_unknown_spec_and_bad_yaml(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec("no-such-accelerator")
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="broken.yaml: not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="mapping"):
        spec_from_dict(["not", "a", "mapping"])


def test_spec_hash_tracks_every_field():
    a = load_spec()
    b = spec_from_dict({**a.model_dump(), "launch_overhead_cycles": 1})
    assert a.spec_hash() == load_spec().spec_hash() != b.spec_hash()


def test_sram_of_one_tile_is_enough():
    data = yaml.safe_load(load_spec().model_dump_json())
    data.update(mac_array={"rows": 64, "cols": 64}, sram_kib=4224 / 1024)
    assert spec_from_dict(data).sram_bytes == 4224
    data["sram_kib"] = 4223 / 1024
    with pytest.raises(SpecError, match="field 'sram_kib': SRAM below one tile of the 64x64 "
                                        "array \\(4224 bytes"):
        spec_from_dict(data)
