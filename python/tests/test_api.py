"""The original package's calls, ONNX Runtime's quantize_static with a reader, and the
in-memory data forms, checked on the models that ship in the repository."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import quantize_rs
from conftest import CLS, DIGITS, DIGITS_CALIB, DIGITS_TEST, ort_outputs, ort_snr


def digits_feeds(n: int = 100):
    x = np.load(DIGITS_TEST)[:n]
    return [{"pixels": x[i : i + 8]} for i in range(0, n, 8)]


def test_original_quick_start(tmp_path, monkeypatch):
    # The original package's README, with its model and data names replaced by the repo's.
    monkeypatch.chdir(tmp_path)
    import shutil

    shutil.copy(DIGITS, "model.onnx")
    shutil.copy(DIGITS_CALIB, "calibration_samples.npy")

    quantize_rs.quantize(input_path="model.onnx", output_path="model_int8.onnx", bits=8)
    quantize_rs.quantize(input_path="model.onnx", output_path="model_int4.onnx", bits=4, per_channel=True)
    quantize_rs.quantize_with_calibration(
        input_path="model.onnx",
        output_path="resnet18_int8.onnx",
        calibration_data="calibration_samples.npy",
        method="minmax",
    )
    with pytest.warns(UserWarning, match="random samples"):
        quantize_rs.quantize_with_calibration(
            input_path="model.onnx", output_path="random_int8.onnx", num_samples=10, method="percentile"
        )
    info = quantize_rs.model_info("model.onnx")
    assert info.name == "digits"
    assert info.num_nodes == 5
    assert info.inputs == ["pixels"] and info.outputs == ["logits"]
    assert info.opset_version == 13 and info.version == 7
    assert "Gemm 3" in str(info)

    feeds = digits_feeds()
    assert ort_snr(Path("model.onnx"), Path("model_int8.onnx"), feeds) > 35
    assert ort_snr(Path("model.onnx"), Path("model_int4.onnx"), feeds) > 15
    assert ort_snr(Path("model.onnx"), Path("resnet18_int8.onnx"), feeds) > 25
    q = quantize_rs.model_info("model_int8.onnx")
    assert q.quantized_ops == {"DequantizeLinear": 3} and q.quantized_weights == 3


def test_result_reports_sizes_report_and_verification(tmp_path):
    out = tmp_path / "d.onnx"
    r = quantize_rs.quantize(DIGITS, out, verify_data=DIGITS_TEST)
    assert r.output == str(out) and out.stat().st_size == r.bytes_out
    assert r.bytes_in == DIGITS.stat().st_size
    assert 0.2 < r.size_ratio < 0.4
    assert [q["name"] for q in r.report.quantized] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert all(q["stored_as"] == "int8" and 30 < q["sqnr_db"] < 60 for q in r.report.quantized)
    assert r.calibration is None
    assert r.verification.samples == 400 and r.verification.snr_db > 35 and r.verification.cosine > 0.999
    assert r.recipe["bits"] == 8 and r.recipe["per-channel"] is True


def test_weight_only_accuracy_target_widens_the_worst_4_bit_weights(tmp_path):
    common = dict(calibration_data=DIGITS_CALIB, weight_only=True, verify_data=DIGITS_TEST, min_elements=0)
    four = quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "four.onnx", bits=4, **common)
    eight = quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "eight.onnx", bits=8, **common)
    assert four.calibration is None and four.report.target is None
    lo, hi = four.verification.snr_db, eight.verification.snr_db
    assert hi > lo + 6, (lo, hi)
    target = (lo + hi) / 2
    r = quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "t.onnx", bits=4, target_snr_db=target, **common)
    t = r.report.target
    assert t["weights_to_8_bits"] and not t["weights_returned_to_float"], t
    assert t["reached_db"] >= target and abs(r.verification.snr_db - t["reached_db"]) < 1e-6, t
    widened = {q["name"] for q in r.report.quantized if q["spec"]["qtype"] in ("int8", "uint8")}
    assert widened == set(t["weights_to_8_bits"]), (widened, t)
    typo = quantize_rs.quantize(DIGITS, tmp_path / "typo.onnx", excluded_layers=["fc9.weight"])
    assert typo.report.unmatched_rules == ["exclude 'fc9.weight'"]


def test_recipe_and_run(tmp_path):
    recipe = quantize_rs.Recipe(bits=4, block_size=32, min_elements=16)
    assert recipe.resolved()["block-size"] == 32 and recipe.resolved()["min-elements"] == 16
    assert recipe.to_dict() == {"bits": 4, "block_size": 32, "min_elements": 16}
    assert recipe.replace(block_size=None).to_dict() == {"bits": 4, "min_elements": 16}
    static = quantize_rs.Recipe(calibration_data="c.npy", method="mse", equalize=True)
    assert static.resolved()["calibration"]["equalize"] is True
    assert quantize_rs.Recipe(calibration_data="c.npy").resolved()["calibration"]["equalize"] is False
    r = quantize_rs.run(DIGITS, tmp_path / "b.onnx", recipe)
    assert r.report.opset_after == 21
    assert all(q["spec"]["granularity"] for q in r.report.quantized)
    # The per-call keywords apply on top of the recipe.
    r = quantize_rs.run(DIGITS, tmp_path / "c.onnx", recipe, block_size=None, verify_data=DIGITS_TEST, min_snr_db=10)
    assert r.report.opset_after == 13 and r.verification.snr_db > 10


class DigitsReader:
    """ONNX Runtime's CalibrationDataReader protocol: get_next() -> dict or None."""

    def __init__(self, batch: int = 1):
        x = np.load(DIGITS_CALIB)
        self.items = iter([{"pixels": x[i : i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.items, None)


def test_quantize_static_with_a_reader_and_ort_enums(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType

    class Reader(CalibrationDataReader, DigitsReader):
        def get_next(self):
            return DigitsReader.get_next(self)

    out = tmp_path / "s.onnx"
    r = quantize_rs.quantize_static(
        str(DIGITS),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=["Gemm"],
    )
    assert r.calibration.samples == 200 and r.calibration.method == "minmax"
    assert r.calibration.activation_type == "uint8"
    assert ort_snr(DIGITS, out, digits_feeds()) > 25
    # Entropy and percentile by ORT's enum names, int8 activations.
    r = quantize_rs.quantize_static(
        DIGITS, out, DigitsReader(), calibrate_method=CalibrationMethod.Percentile, activation_type=QuantType.QInt8
    )
    assert r.calibration.method == "percentile" and r.calibration.activation_type == "int8"
    with pytest.raises(quantize_rs.RecipeError, match="QDQ") as e:
        quantize_rs.quantize_static(DIGITS, out, DigitsReader(), quant_format=QuantFormat.QOperator)
    assert e.value.key == "quant_format"


def test_quantize_dynamic_runs_gemm_on_integers(tmp_path):
    import onnx

    out = tmp_path / "d.onnx"
    from onnxruntime.quantization import QuantType

    r = quantize_rs.quantize_dynamic(DIGITS, out, weight_type=QuantType.QInt8)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    # The digits MLP is three Gemm layers: each now an integer product of a run-time-quantized input.
    assert ops.count("MatMulInteger") == 3 and ops.count("DynamicQuantizeLinear") == 3 and "Gemm" not in ops
    assert r.report.dynamic["integer_nodes"] == 3
    x = np.load(DIGITS_TEST)[:64].astype(np.float32)
    feeds = [{"pixels": x[i : i + 1]} for i in range(len(x))]
    assert ort_snr(DIGITS, out, feeds) > 25.0
    with pytest.raises(quantize_rs.RecipeError, match="8 bits") as e:
        quantize_rs.quantize_dynamic(DIGITS, out, reduce_range=True)
    assert e.value.key == "reduce_range"
    with pytest.raises(quantize_rs.RecipeError, match="QInt8"):
        quantize_rs.quantize_dynamic(DIGITS, out, weight_type=QuantType.QUInt8)


def read(p: Path) -> bytes:
    return Path(p).read_bytes()


def test_in_memory_data_is_byte_identical_to_files(tmp_path):
    x = np.load(DIGITS_CALIB)
    # An array, and the same array saved with numpy.save.
    np.save(tmp_path / "saved.npy", x)
    a = quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "file.onnx", calibration_data=tmp_path / "saved.npy")
    b = quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "array.onnx", calibration_data=x)
    assert read(tmp_path / "file.onnx") == read(tmp_path / "array.onnx")
    assert a.calibration.samples == b.calibration.samples == 200
    # The shipped file itself.
    quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "shipped.onnx", calibration_data=DIGITS_CALIB)
    assert read(tmp_path / "shipped.onnx") == read(tmp_path / "file.onnx")
    # A dict of arrays and the same saved with numpy.savez.
    np.savez(tmp_path / "saved.npz", pixels=x)
    quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "npz.onnx", calibration_data=tmp_path / "saved.npz")
    quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "dict.onnx", calibration_data={"pixels": x})
    assert read(tmp_path / "npz.onnx") == read(tmp_path / "dict.onnx") == read(tmp_path / "file.onnx")
    # A reader, an iterable of dicts, a generator of arrays, and a folder of per-sample files.
    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(0, len(x), 10):
        np.savez(folder / f"{i:05d}.npz", pixels=x[i : i + 10])
    quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "folder.onnx", calibration_data=folder)
    quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "reader.onnx", calibration_data=DigitsReader(batch=10))
    quantize_rs.quantize_with_calibration(
        DIGITS, tmp_path / "list.onnx", calibration_data=[{"pixels": x[i : i + 10]} for i in range(0, len(x), 10)]
    )
    quantize_rs.quantize_with_calibration(
        DIGITS, tmp_path / "gen.onnx", calibration_data=(x[i : i + 10] for i in range(0, len(x), 10))
    )
    assert read(tmp_path / "reader.onnx") == read(tmp_path / "folder.onnx")
    assert read(tmp_path / "list.onnx") == read(tmp_path / "folder.onnx")
    assert read(tmp_path / "gen.onnx") == read(tmp_path / "folder.onnx")
    # The same samples in the same order, however they were grouped: the same model.
    assert read(tmp_path / "folder.onnx") == read(tmp_path / "file.onnx")


def test_samples_limits_a_reader(tmp_path):
    r = quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "a.onnx", calibration_data=DigitsReader(), samples=7)
    assert r.calibration.samples == 7


def test_validate_and_benchmark(tmp_path):
    out = tmp_path / "q.onnx"
    quantize_rs.quantize(DIGITS, out)
    v = quantize_rs.validate(DIGITS, out, data=np.load(DIGITS_TEST), detailed=True, min_snr_db=30)
    assert v.passed
    assert [c.name for c in v.checks] == ["structure", "connectivity", "opset", "types", "interface", "runs", "min-snr-db"]
    assert v.samples == 400 and v.verification.snr_db > 35 and v.verification.exact
    assert sorted(w.name for w in v.weights) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert all(w.snr_db > 30 and w.stored_as == "int8" for w in v.weights)
    # A wrong pair fails the interface check and is not run.
    bad = quantize_rs.validate(CLS, out)
    assert not bad.passed
    assert bad.check("interface").status == "failed" and bad.check("runs").status == "skipped"
    b = quantize_rs.benchmark(DIGITS, out, runs=3, warmup=1)
    assert b.original["latency"]["runs"] == 3 and b.compression_ratio > 2


def test_paths_may_be_pathlike_or_str_and_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quantize_rs.quantize(os.path.relpath(DIGITS), "rel.onnx")
    quantize_rs.quantize(Path(DIGITS), Path("rel2.onnx"))
    assert read(tmp_path / "rel.onnx") == read(tmp_path / "rel2.onnx")
