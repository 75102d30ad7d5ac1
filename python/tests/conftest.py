"""Shared fixtures: the models that ship in the repository, real images from the scikit-image
wheel (fetched and unpacked the way scripts/real_models.py does, into the same cache), and
ONNX Runtime helpers."""

from __future__ import annotations

import functools
import importlib.util
import sys
import zlib
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CLS = ROOT / "models" / "ppocr-cls.onnx"
DIGITS = ROOT / "examples" / "digits" / "models" / "digits.onnx"
DIGITS_CALIB = ROOT / "examples" / "digits" / "models" / "digits-calib.npy"
DIGITS_TEST = ROOT / "examples" / "digits" / "models" / "digits-test.npy"


@functools.lru_cache(maxsize=None)
def _real_models():
    spec = importlib.util.spec_from_file_location("real_models", ROOT / "scripts" / "real_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("real_models", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def images() -> Dict[str, Path]:
    """The sample images of the scikit-image wheel (PyPI), unpacked under target/real-models."""
    rm = _real_models()
    out = ROOT / "target" / "real-models"
    wheel = rm.fetch_wheel(rm.WHEELS[rm.IMAGE_WHEEL], out / "wheels")
    import zipfile

    found = {}
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            if any(member.startswith("skimage/data/") and member.count("/") == 2 and member.endswith(ext) for ext in (".png", ".jpg")):
                dest = out / "images" / Path(member).name
                rm.extract_member(zf, member, dest)
                found[dest.name] = dest
    assert len(found) >= 10, found
    return found


@pytest.fixture(scope="session")
def cls_inputs(images) -> Dict[str, List[np.ndarray]]:
    """PP-OCR cls inputs [1, 3, 48, 192] from real images, as scripts/real_models.py makes them:
    calibration crops from every image but the held-out ones, evaluation crops from those."""
    rm = _real_models()
    calibration, evaluation = rm.split_images(list(images))
    out: Dict[str, List[np.ndarray]] = {"calib": [], "eval": []}
    for split, names, crops in (("calib", calibration, 2), ("eval", evaluation, 3)):
        for name in names:
            rng = np.random.default_rng(zlib.crc32(f"cls/{name}/{split}".encode()))
            for x, _box in rm.prep_cls(rm.load_rgb(images[name]), rng, crops):
                out[split].append(x.astype(np.float32))
    return out


def ort_outputs(model: Path, feeds: List[Dict[str, np.ndarray]]) -> List[np.ndarray]:
    """Every output of ``model`` in ONNX Runtime (CPU, one thread) for each feed, concatenated."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return [np.concatenate([np.ravel(o) for o in sess.run(None, f)]) for f in feeds]


def snr_db(reference: List[np.ndarray], candidate: List[np.ndarray]) -> float:
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    noise = sum(float(np.sum((r.astype(np.float64) - c) ** 2)) for r, c in zip(reference, candidate))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def ort_snr(original: Path, quantized: Path, feeds: List[Dict[str, np.ndarray]]) -> float:
    return snr_db(ort_outputs(original, feeds), ort_outputs(quantized, feeds))
