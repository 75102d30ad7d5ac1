#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into fuzz/corpus/<target>/ (standard library only).

Seeds come from the repository's own files (the digits example's model, data and Cargo.toml,
the README's config files) and small hand-made files of each format. Each input starts with the
selector bytes the harness reads (fuzz/src/harness.rs). Kept small: libFuzzer mutates faster.
"""
import io
import json
import pathlib
import struct
import sys
import zipfile
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "fuzz" / "corpus"


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def npy(descr, shape, payload, fortran=False):
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (
        descr, fortran, "".join(f"{d}, " for d in shape))
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


def f32(n, start=0.0):
    return struct.pack(f"<{n}f", *[start + i * 0.25 for i in range(n)])


def npz(arrays, deflate):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as z:
        for name, data in arrays.items():
            z.writestr(name + ".npy", data)
    return buf.getvalue()


def safetensors(tensors):
    header, blob = {}, b""
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blob


def png(width, height, gray):
    channels = 1 if gray else 3
    rows = b"".join(b"\x00" + bytes((x * 31 + y * 17 + c * 7) % 256 for x in range(width) for c in range(channels))
                    for y in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0 if gray else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def main():
    digits = ROOT / "examples" / "digits"
    # model: selector byte (recipe), then the model.
    model = (digits / "models" / "digits.onnx").read_bytes()
    for sel in range(5):
        put("model", f"digits-{sel}", bytes([sel]) + model)

    # data: format byte (npy, npz, safetensors, png, jpg; +5 = inside a folder), input selector.
    calib = (digits / "models" / "digits-calib.npy").read_bytes()
    header_len = 10 + struct.unpack("<H", calib[8:10])[0]
    two = npy("<f4", (2, 64), calib[header_len:header_len + 2 * 64 * 4])
    put("data", "digits-2", bytes([0, 0x80]) + two)
    put("data", "digits-2-folder", bytes([5, 0x80]) + two)
    put("data", "nchw-f8", bytes([0, 0]) + npy("<f8", (1, 3, 8, 8), struct.pack("<192d", *range(192))))
    put("data", "fortran", bytes([0, 0]) + npy("<f4", (2, 3, 8, 8), f32(384), fortran=True))
    ids = npy("<i8", (2, 5), struct.pack("<10q", *range(10)))
    mask = npy("<i4", (2, 5), struct.pack("<10i", *[1] * 10))
    put("data", "tokens-stored", bytes([1, 1]) + npz({"input_ids": ids, "attention_mask": mask}, False))
    put("data", "tokens-deflated", bytes([1, 1]) + npz({"input_ids": ids, "attention_mask": mask}, True))
    put("data", "vad-npz", bytes([1, 3]) + npz({
        "x": npy("<f4", (1, 16), f32(16)), "sr": npy("<i8", (), struct.pack("<q", 16000)),
        "state": npy("<f2", (2, 1, 4), b"\x00\x3c" * 8)}, True))
    put("data", "tokens-st", bytes([2, 1]) + safetensors({
        "input_ids": ("I64", [2, 5], struct.pack("<10q", *range(10))),
        "attention_mask": ("I64", [2, 5], struct.pack("<10q", *[1] * 10))}))
    put("data", "image-st", bytes([2, 0]) + safetensors({"x": ("BF16", [1, 3, 8, 8], b"\x80\x3f" * 192)}))
    put("data", "rgb", bytes([3, 0]) + png(8, 8, False))
    put("data", "rgb-folder-nhwc", bytes([8, 0x10]) + png(12, 9, False))
    put("data", "gray-raw", bytes([3, 0x22]) + png(5, 6, True))

    # config: 0 YAML config, 1 TOML config, 2 Cargo.toml.
    put("config", "digits-cargo-toml", bytes([2]) + (digits / "Cargo.toml").read_bytes())
    put("config", "jobs-yaml", bytes([0]) + b"""defaults:
  bits: 4
  block_size: 32
models:
  - input: a.onnx
    output: out/a.int4.onnx
    exclude: ["head.*"]
    calibration: { data: c.npz, method: entropy, image: { size: [8, 8], mean: [0.5] } }
batch:
  input_dir: "models"
  output_dir: out
  skip_existing: true
""")
    put("config", "jobs-toml", bytes([1]) + b"""[defaults]
per_channel = false
layer_bits = { "conv1.weight" = 8 }

[[models]]
input = "a.onnx"
output = "a.int8.onnx"
min_snr_db = 30.0
verify_data = "v.npy"
""")
    put("config", "metadata", bytes([2]) + b"""[package]
name = "app"

[package.metadata.quantize]
bits = 8
[package.metadata.quantize.models.det]
path = "models/det.onnx"
calibration = { data = "calib/", method = "percentile", percentile = 99.9 }
max-size-ratio = 0.3
""")

    # external: location, offset, length, type, dims, has-location, then the data file.
    def ext(loc, off, length, ty, dims, data):
        return bytes([loc]) + off + length + bytes([ty, len(dims)] + dims + [1]) + data

    weights = f32(8)
    put("external", "whole", ext(0, b"\x00", b"\x00", 0, [1, 8], weights))
    put("external", "range", ext(0, b"\x01\x04", b"\x02\x04", 0, [2, 8], b"\x00" * 4 + f32(16)))
    put("external", "int8", ext(0, b"\x00", b"\x01\x06", 1, [2, 3], bytes(range(6))))
    put("external", "big", ext(0, b"\x00", b"\x03" + struct.pack("<Q", 100 << 30), 0, [0x80] + list(
        struct.pack("<q", 25 << 30)), weights))
    put("external", "escape", ext(2, b"\x00", b"\x00", 0, [1, 8], weights))
    put("external", "sub", ext(4, b"\x00", b"\x00", 0, [2, 4], weights))
    return 0


if __name__ == "__main__":
    sys.exit(main())
