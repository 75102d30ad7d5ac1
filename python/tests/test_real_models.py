"""Outputs load in ONNX Runtime with their SNR checked, on the PP-OCR classifier that ships in
models/ and real images (the scikit-image wheel's samples, preprocessed as scripts/real_models.py
does; held-out images for evaluation, the others for calibration)."""

from __future__ import annotations

import pytest

import quantize_rs
from conftest import CLS, _real_models, ort_snr


def floor(*key: str) -> float:
    """The gate scripts/floors.py sets for the CLI on the same model and images (the Python
    package runs the same engine, so it is held to the same numbers)."""
    f = _real_models().floors.FLOORS[key]
    assert f.op == ">="
    return f.limit


# The weight-only configurations of scripts/real_models.py, as keyword arguments.
WEIGHT_ONLY = {
    "int8-per-channel": {"bits": 8, "per_channel": True},
    "int8-per-tensor": {"bits": 8, "per_channel": False},
    "int4-blocked32": {"bits": 4, "block_size": 32},
    "int4-native": {"bits": 4, "per_channel": True, "native_int4": True},
}


@pytest.mark.parametrize("name", sorted(WEIGHT_ONLY))
def test_weight_only_cls_in_onnxruntime(tmp_path, cls_inputs, name):
    options, limit = WEIGHT_ONLY[name], floor("weights", "cls", name, "snr_db")
    out = tmp_path / f"{name}.onnx"
    quantize_rs.quantize(CLS, out, **options)
    feeds = [{"x": x} for x in cls_inputs["eval"]]
    snr = ort_snr(CLS, out, feeds)
    print(f"{name}: ORT output SNR {snr:.2f} dB on {len(feeds)} held-out inputs")
    assert snr >= limit, f"{name}: {snr:.2f} dB < {limit}"


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_static_cls_from_a_reader_in_onnxruntime(tmp_path, cls_inputs, method):
    limit = floor("static", "cls", method, "snr_db")
    class Reader:
        def __init__(self):
            self.it = iter(cls_inputs["calib"])

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"x": x}

    out = tmp_path / f"{method}.onnx"
    r = quantize_rs.quantize_static(
        CLS, out, Reader(), calibrate_method=method, verify_data=[{"x": x} for x in cls_inputs["eval"]]
    )
    assert r.calibration.samples == len(cls_inputs["calib"])
    assert r.calibration.quantized_nodes > 20
    feeds = [{"x": x} for x in cls_inputs["eval"]]
    snr = ort_snr(CLS, out, feeds)
    print(f"static {method}: ORT output SNR {snr:.2f} dB, tract {r.verification.snr_db:.2f} dB")
    assert snr >= limit, f"static {method}: {snr:.2f} dB < {limit}"
    assert quantize_rs.validate(CLS, out, data=[{"x": x} for x in cls_inputs["eval"][:3]]).passed


def test_a_folder_of_images_with_preprocessing(tmp_path, images):
    """Calibration data as a folder of images (a format the CLI reads), with ImagePreprocess."""
    import shutil

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("chelsea.png", "coins.png", "rocket.jpg", "text.png"):
        shutil.copy(images[name], folder / name)
    held_out = tmp_path / "held-out"
    held_out.mkdir()
    shutil.copy(images["camera.png"], held_out / "camera.png")
    image = quantize_rs.ImagePreprocess(size=(48, 192), channels="bgr", mean=[0.5], std=[0.5])
    out = tmp_path / "img.onnx"
    # Held-out images are read with the same image settings as the calibration images.
    r = quantize_rs.quantize_with_calibration(CLS, out, calibration_data=folder, image=image, verify_data=held_out)
    assert r.calibration.samples == 4
    assert r.verification.samples == 1 and r.verification.snr_db > 10
    v = quantize_rs.validate(CLS, out, data=folder, image={"size": [48, 192], "channels": "bgr", "mean": [0.5], "std": [0.5]})
    assert v.passed and v.samples == 4 and v.verification.snr_db > 10
    with pytest.raises(quantize_rs.RecipeError) as e:
        quantize_rs.quantize_with_calibration(
            CLS, out, calibration_data=folder, image=quantize_rs.ImagePreprocess(size=(48, 192), layout="hwc")
        )
    assert e.value.key == "image"
