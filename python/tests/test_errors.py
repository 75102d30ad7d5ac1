"""Each exception class, its builtin base, the fields that name what failed, and messages that
name keyword arguments rather than command-line flags."""

from __future__ import annotations

import errno

import numpy as np
import pytest

import quantize_rs
from quantize_rs import (
    DataError,
    FileError,
    InferenceError,
    ModelError,
    NothingQuantizedError,
    QualityGateError,
    QuantizeError,
    RecipeError,
)
from conftest import CLS, DIGITS, DIGITS_CALIB, DIGITS_TEST


def test_hierarchy():
    for cls, builtin in [
        (FileError, OSError),
        (ModelError, ValueError),
        (DataError, ValueError),
        (RecipeError, ValueError),
        (NothingQuantizedError, ValueError),
        (InferenceError, RuntimeError),
        (QualityGateError, QuantizeError),
    ]:
        assert issubclass(cls, QuantizeError) and issubclass(cls, builtin), cls


def test_file_errors(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(FileError) as e:
        quantize_rs.quantize(missing, tmp_path / "out.onnx")
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOENT
    assert e.value.filename == str(missing) and "cannot read" in str(e.value)
    with pytest.raises(FileError, match="does not exist") as e:
        quantize_rs.quantize(DIGITS, tmp_path / "no" / "such" / "out.onnx")
    assert e.value.filename == str(tmp_path / "no" / "such")
    # The output is the input: refused unless force=True, and the message says so in Python.
    copy = tmp_path / "m.onnx"
    copy.write_bytes(DIGITS.read_bytes())
    with pytest.raises(FileError) as e:
        quantize_rs.quantize(copy, copy)
    assert "force=True" in str(e.value) and "--force" not in str(e.value)
    assert e.value.errno == errno.EEXIST and e.value.filename == str(copy)
    quantize_rs.quantize(copy, copy, force=True)
    assert quantize_rs.model_info(copy).quantized_weights == 3


def test_model_error(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07 this is not protobuf \xff\xff\xff")
    with pytest.raises(ModelError, match="not a valid ONNX model") as e:
        quantize_rs.quantize(junk, tmp_path / "out.onnx")
    assert isinstance(e.value, ValueError) and e.value.filename == str(junk)
    with pytest.raises(ModelError):
        quantize_rs.model_info(junk)


def test_data_errors_name_the_input_and_the_argument(tmp_path):
    out = tmp_path / "out.onnx"
    # An array of the wrong width: the message names the argument, not a temporary file.
    with pytest.raises(DataError) as e:
        quantize_rs.quantize_with_calibration(DIGITS, out, calibration_data=np.zeros((4, 63), np.float32))
    assert e.value.input == "pixels" and e.value.filename is None
    assert str(e.value).startswith("calibration_data: input 'pixels': "), str(e.value)
    assert "quantize-rs-data" not in str(e.value)
    # Integers never become floats.
    with pytest.raises(DataError, match="pixels"):
        quantize_rs.quantize_with_calibration(DIGITS, out, calibration_data={"pixels": np.zeros((4, 64), np.int32)})
    # A dict naming no model input.
    with pytest.raises(DataError, match="'image' matches no model input"):
        quantize_rs.quantize_with_calibration(DIGITS, out, calibration_data={"image": np.zeros((4, 64), np.float32)})
    # The fourth sample of a reader, by its index; same checks as files (NaN named).
    bad = [{"pixels": np.zeros((1, 64), np.float32)} for _ in range(3)] + [{"pixels": np.full((1, 64), np.nan, np.float32)}]
    with pytest.raises(DataError) as e:
        quantize_rs.quantize_static(DIGITS, out, iter(bad))
    assert str(e.value).startswith("calibration_data_reader[3]: "), str(e.value)
    assert "NaN" in str(e.value) and e.value.input == "pixels"
    with pytest.raises(DataError, match="no samples"):
        quantize_rs.quantize_static(DIGITS, out, iter([]))
    # A file keeps its name.
    bad_file = tmp_path / "bad.npy"
    np.save(bad_file, np.zeros((2, 5), np.float32))
    with pytest.raises(DataError) as e:
        quantize_rs.quantize_with_calibration(DIGITS, out, calibration_data=bad_file)
    assert e.value.filename == str(bad_file) and str(bad_file) in str(e.value)
    assert not out.exists()


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"bits": 6}, "bits"),
        ({"block_size": 0}, "block_size"),
        ({"bits": "8"}, "bits"),
        ({"native_int4": True}, "native_int4"),
        ({"layer_bits": {"fc1*": 5}}, "layer_bits"),
        ({"op_types": ["Softmax"]}, "op_types"),
        ({"exclude": ["[unclosed"]}, "exclude"),
        ({"max_size_ratio": -1.0}, "max_size_ratio"),
        ({"calibration_data": "x.npy", "method": "kl"}, "method"),
        ({"calibration_data": "x.npy", "percentile": 200.0}, "percentile"),
        ({"calibration_data": "x.npy", "activation_op_types": ["Softmax"]}, "activation_op_types"),
        ({"calibration_data": "x.npy", "image": {"size": [0, 4]}}, "image"),
        ({"method": "entropy"}, "method"),
    ],
)
def test_recipe_errors_name_the_keyword(kwargs, key):
    with pytest.raises(RecipeError) as e:
        quantize_rs.Recipe(**kwargs)
    assert e.value.key == key, str(e.value)
    assert str(e.value).startswith(key), str(e.value)
    assert "--" not in str(e.value)


def test_recipe_errors_from_the_functions(tmp_path):
    with pytest.raises(RecipeError) as e:
        quantize_rs.quantize(DIGITS, tmp_path / "o.onnx", bits=3)
    assert e.value.key == "bits"
    with pytest.raises(RecipeError) as e:
        quantize_rs.quantize_with_calibration(DIGITS, tmp_path / "o.onnx", calibration_data=DIGITS_CALIB, method="kl")
    assert e.value.key == "method"
    with pytest.raises(RecipeError) as e:
        quantize_rs.quantize(DIGITS, tmp_path / "o.onnx", min_snr_db=30)
    assert e.value.key == "min_snr_db" and "verify_data" in str(e.value)
    with pytest.raises(RecipeError) as e:
        quantize_rs.quantize_static(DIGITS, tmp_path / "o.onnx", DIGITS_CALIB, extra_options={"SmoothQuant": True})
    assert e.value.key == "extra_options"
    with pytest.raises(RecipeError) as e:
        quantize_rs.quantize_static(DIGITS, tmp_path / "o.onnx", DIGITS_CALIB, op_types_to_quantize=["LayerNormalization"])
    assert e.value.key == "op_types_to_quantize"
    with pytest.raises(TypeError):
        quantize_rs.Recipe(bitz=8)


def test_nothing_quantized(tmp_path):
    out = tmp_path / "o.onnx"
    with pytest.raises(NothingQuantizedError) as e:
        quantize_rs.quantize(DIGITS, out, exclude=["*"])
    assert "allow_empty=True" in str(e.value) and "--allow-empty" not in str(e.value)
    assert not out.exists()
    r = quantize_rs.quantize(DIGITS, out, exclude=["*"], allow_empty=True)
    assert r.report.quantized == [] and out.exists()
    # excluded_layers takes exact names (no glob meaning).
    r = quantize_rs.quantize(DIGITS, out, excluded_layers=["fc1.weight", "fc*"])
    assert [q["name"] for q in r.report.quantized] == ["fc2.weight", "fc3.weight"]


def test_quality_gates(tmp_path):
    out = tmp_path / "o.onnx"
    with pytest.raises(QualityGateError) as e:
        quantize_rs.quantize(DIGITS, out, bits=4, verify_data=DIGITS_TEST, min_snr_db=80)
    assert e.value.gate == "min_snr_db" and "min_snr_db" in str(e.value)
    with pytest.raises(QualityGateError) as e:
        quantize_rs.quantize(DIGITS, out, max_size_ratio=0.01)
    assert e.value.gate == "max_size_ratio"
    assert not out.exists()


def test_inference_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3, 1, 1], np.linspace(-1, 1, 12, dtype=np.float32))
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["X", "W"], ["c"]),
            helper.make_node("Frobnicate", ["c"], ["Y"], name="frob", domain="com.example"),
        ],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [w],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)]
    )
    model.ir_version = 7
    path = tmp_path / "frob.onnx"
    onnx.save(model, path)
    with pytest.raises(InferenceError, match="Frobnicate") as e:
        quantize_rs.quantize_with_calibration(
            path, tmp_path / "o.onnx", calibration_data=np.zeros((2, 3, 8, 8), np.float32), min_elements=1
        )
    assert isinstance(e.value, RuntimeError)
    assert "--op-types" not in str(e.value)
