#!/usr/bin/env python3
"""scale.py: quantize an ONNX model larger than the memory it is given, and time it against `cp`.

Writes an LLM-layer-shaped float model of the requested size with external data (a residual stack
of pre-norm blocks `x = x + MatMul(LayerNorm(x), W)`, W random 2048x2048 float32, each written to
the data file as it is drawn: the weights are never all in memory), then, inside a cgroup v1
memory limit (1 GiB by default, swap included where the kernel accounts it):

  * copies the model's files with `cp` (the figure to compare with),
  * quantizes it with the quantize-rs CLI: int8 per-channel, and int4 blocked-32 stored as ONNX
    INT4 (the DequantizeLinear -> MatMul layout ONNX Runtime fuses into MatMulNBits),

checks that no run was killed (exit status, the cgroup's OOM counter), reports wall time, the
cgroup's peak usage and the process's own peak (VmHWM, from the CLI's JSON report), and, for
models up to --check-max-gb, runs float and quantized models in ONNX Runtime on one random input
(SNR of the output, ORT's graph after optimization: MatMulNBits nodes, and time per run).

  PY="$(scripts/setup-python.sh)"
  cargo build --release -p cargo-quantize --bin quantize-rs
  "$PY" scripts/scale.py --gb 6 --dir /work/scale-run            # files removed at the end
  "$PY" scripts/scale.py --gb 2 --dir /tmp/scale --keep          # keep them

Without cgroup v1 (or without root) the memory limit cannot be set: the script says so and exits
0 without running (--no-limit runs anyway, unlimited). It refuses to start when the disk has less
than ~2.2x the model's size free (input, output, the cp copy). Exit status 1 when a run fails,
is killed, or a quantized model is not near the float one.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HIDDEN = 2048
# Flags, and output size as a fraction of the float weights.
RECIPES = {
    "int8-per-channel": (["--bits", "8", "--per-channel"], 0.26),
    "int4-blocked-32": (["--bits", "4", "--block-size", "32", "--native-int4"], 0.17),
}
TOKENS = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def human(n):
    for unit in ["B", "KiB", "MiB", "GiB", "TiB"]:
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024


def write_model(path, layers, seed, repeat=1):
    """The float model: `layers` blocks, weights streamed to `<path>.data`, one tensor at a time.
    With `repeat` > 1 only every `repeat`-th weight is written and the blocks share them in turn
    (the data file is 1/repeat of the weights; every block still has its own initializer)."""
    import onnx
    from onnx import TensorProto, helper

    data_name = os.path.basename(path) + ".data"
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    offset = 0
    # Residual branches scaled by 1/sqrt(layers): the output stays of the input's size at any depth.
    std = 1.0 / np.sqrt(HIDDEN * layers)
    ones = helper.make_tensor("ln_scale", TensorProto.FLOAT, [HIDDEN], np.ones(HIDDEN, np.float32).tobytes(), raw=True)
    zeros = helper.make_tensor("ln_bias", TensorProto.FLOAT, [HIDDEN], np.zeros(HIDDEN, np.float32).tobytes(), raw=True)
    inits += [ones, zeros]
    with open(os.path.join(os.path.dirname(path), data_name), "wb") as f:
        x = "x"
        unique = -(-layers // repeat)
        size = HIDDEN * HIDDEN * 4
        for i in range(layers):
            if i < unique:
                w = (rng.standard_normal((HIDDEN, HIDDEN), dtype=np.float32) * np.float32(std)).tobytes()
                f.write(w)
                del w
                offset += size
            t = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[HIDDEN, HIDDEN])
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str((i % unique) * size)), ("length", str(size))):
                e = t.external_data.add()
                e.key, e.value = k, v
            inits.append(t)
            nodes += [
                helper.make_node("LayerNormalization", [x, "ln_scale", "ln_bias"], [f"n{i}"], axis=-1),
                helper.make_node("MatMul", [f"n{i}", f"w{i}"], [f"m{i}"]),
                helper.make_node("Add", [x, f"m{i}"], [f"x{i}"]),
            ]
            x = f"x{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        nodes,
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, TOKENS, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, TOKENS, HIDDEN])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="scale.py")
    model.ir_version = 8
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return layers * size


def files_of(model_path):
    """The model file and its external data file, when there is one."""
    out = [model_path]
    data = model_path + ".data"
    if os.path.exists(data):
        out.append(data)
    return out


def size_of(paths):
    return sum(os.path.getsize(p) for p in paths)


class Cgroup:
    """A cgroup v1 memory group; `None` from `make` where one cannot be made."""

    BASE = "/sys/fs/cgroup/memory"

    def __init__(self, path):
        self.path = path

    @classmethod
    def make(cls, limit):
        if not os.path.isfile(os.path.join(cls.BASE, "memory.limit_in_bytes")):
            return None, f"no cgroup v1 memory controller at {cls.BASE}"
        path = os.path.join(cls.BASE, f"quantize-rs-scale-{os.getpid()}")
        try:
            os.makedirs(path, exist_ok=True)
            cls._write(path, "memory.limit_in_bytes", limit)
            memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
            if os.path.exists(memsw):
                cls._write(path, "memory.memsw.limit_in_bytes", limit)
        except OSError as e:
            try:
                os.rmdir(path)
            except OSError:
                pass
            return None, f"cannot set up {path}: {e} (needs root)"
        return cls(path), None

    @staticmethod
    def _write(path, name, value):
        with open(os.path.join(path, name), "w") as f:
            f.write(str(value))

    def read(self, name):
        with open(os.path.join(self.path, name)) as f:
            return f.read()

    def reset_peak(self):
        self._write(self.path, "memory.max_usage_in_bytes", 0)

    def oom_kills(self):
        for line in self.read("memory.oom_control").splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def run(self, cmd):
        """Runs `cmd` inside the group: (exit status, seconds, peak bytes, OOM kills, stdout)."""
        self.reset_peak()
        kills = self.oom_kills()
        procs = os.path.join(self.path, "cgroup.procs")

        def enter():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))

        start = time.perf_counter()
        p = subprocess.run(cmd, preexec_fn=enter, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        peak = int(self.read("memory.max_usage_in_bytes"))
        if p.returncode != 0:
            log(p.stderr[-2000:])
        return p.returncode, seconds, peak, self.oom_kills() - kills, p.stdout

    def remove(self):
        try:
            os.rmdir(self.path)
        except OSError as e:
            log(f"could not remove {self.path}: {e}")


class NoCgroup:
    def run(self, cmd):
        start = time.perf_counter()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            log(p.stderr[-2000:])
        return p.returncode, time.perf_counter() - start, None, 0, p.stdout

    def remove(self):
        pass


def snr_db(ref, got):
    noise = np.sum((ref.astype(np.float64) - got) ** 2)
    signal = np.sum(ref.astype(np.float64) ** 2)
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def ort_check(float_path, quantized, work):
    """SNR of each quantized model's output vs the float one, ORT's optimized graph and run time."""
    import onnx
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((1, TOKENS, HIDDEN), dtype=np.float32)

    def session(path, optimized=None):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        if optimized:
            so.optimized_model_filepath = optimized
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    def timed(s):
        s.run(None, {"x": x})
        runs, start = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - start < 2:
            s.run(None, {"x": x})
            runs += 1
        return (time.perf_counter() - start) / runs * 1000

    s = session(float_path)
    ref = s.run(None, {"x": x})[0]
    results = {"float_ms": timed(s)}
    del s
    for name, path in quantized.items():
        # ORT writes its optimized graph inline: only for outputs under protobuf's 2 GiB.
        opt = None if os.path.exists(path + ".data") else os.path.join(work, f"{name}.optimized.onnx")
        s = session(path, opt)
        got = s.run(None, {"x": x})[0]
        ops = {}
        if opt:
            for n in onnx.load(opt, load_external_data=False).graph.node:
                ops[n.op_type] = ops.get(n.op_type, 0) + 1
            for p in files_of(opt):
                os.remove(p)
        results[name] = {"snr_db": snr_db(ref, got), "ms": timed(s), "optimized_ops": ops}
        del s
    return results


def ort_smoke(path):
    """Loads a model in ONNX Runtime and runs it once on a random input: seconds, finiteness."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    start = time.perf_counter()
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    load = time.perf_counter() - start
    x = np.random.default_rng(1).standard_normal((1, TOKENS, HIDDEN), dtype=np.float32)
    start = time.perf_counter()
    y = s.run(None, {"x": x})[0]
    return {"load_s": load, "run_s": time.perf_counter() - start, "finite": bool(np.isfinite(y).all())}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0, help="float weights to write, in GB (1e9 bytes)")
    ap.add_argument("--dir", default=os.path.join(ROOT, "target", "scale"), help="work folder")
    ap.add_argument("--keep", action="store_true", help="keep the model files (default: remove them)")
    ap.add_argument("--limit-mib", type=int, default=1024, help="the cgroup's memory limit")
    ap.add_argument("--no-limit", action="store_true", help="run without a cgroup where none can be made")
    ap.add_argument("--check-max-gb", type=float, default=8.0, help="run ORT on models up to this size")
    ap.add_argument("--bin", default=None, help="the quantize-rs binary (default: the release build)")
    ap.add_argument("--weight-range", choices=["mse", "minmax"], default="mse", help="passed to quantize-rs")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="write 1/N of the weights and let the blocks share them (a model larger than the free disk; "
        "no cp comparison then)",
    )
    ap.add_argument("--only", nargs="+", choices=list(RECIPES), default=list(RECIPES), help="recipes to run")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()

    binary = a.bin or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "quantize-rs")
    if not os.access(binary, os.X_OK):
        log(f"no quantize-rs binary at {binary}: cargo build --release -p cargo-quantize --bin quantize-rs")
        return 1
    limit = a.limit_mib << 20
    group, why = Cgroup.make(limit)
    if group is None:
        if not a.no_limit:
            log(f"SKIPPED: {why}; the memory limit cannot be set here (--no-limit runs without one)")
            return 0
        log(f"running WITHOUT a memory limit: {why}")
        group = NoCgroup()
    layers = max(1, int(a.gb * 1e9) // (HIDDEN * HIDDEN * 4))
    # The input (and its cp copy), every output, and while one is written its quantized values
    # once more in quantize-rs's scratch file (removed when it exits).
    weights = layers * HIDDEN * HIDDEN * 4
    out = {name: weights * RECIPES[name][1] for name in a.only}
    need = int(weights / a.repeat * (2 if a.repeat == 1 else 1) + sum(out.values()) + max(out.values()) + (200 << 20))
    os.makedirs(a.dir, exist_ok=True)
    free = shutil.disk_usage(a.dir).free
    if free < need:
        group.remove()
        log(f"not enough disk: {human(free)} free in {a.dir}, {human(need)} needed (input, output, cp copy)")
        return 1
    work = os.path.join(a.dir, f"scale-{os.getpid()}")
    os.makedirs(work)
    results = {
        "layers": layers,
        "limit_bytes": limit if isinstance(group, Cgroup) else None,
        "weight_range": a.weight_range,
        "cores": os.cpu_count(),
        "load_average_before": os.getloadavg(),
    }
    failed = False
    try:
        model = os.path.join(work, "model.onnx")
        start = time.perf_counter()
        results["weights_bytes"] = write_model(model, layers, seed=0, repeat=a.repeat)
        results["repeat"] = a.repeat
        results["input_bytes"] = size_of(files_of(model))
        log(f"wrote {model}: {layers} blocks, {human(results['input_bytes'])} in {time.perf_counter() - start:.1f} s")
        subprocess.run(["sync"], check=True)

        if a.repeat == 1:
            copy = os.path.join(work, "copy")
            os.makedirs(copy)
            cmd = ["sh", "-c", f'cp "$@" {copy}/ && sync {copy}/*', "cp", *files_of(model)]
            rc, secs, peak, kills, _ = group.run(cmd)
            results["cp"] = {"status": rc, "seconds": secs, "cgroup_peak_bytes": peak, "oom_kills": kills}
            log(f"cp (+ sync of the copy): {secs:.1f} s")
            shutil.rmtree(copy)
            failed |= rc != 0

        outputs = {}
        for name in a.only:
            flags = RECIPES[name][0]
            out = os.path.join(work, f"{name}.onnx")
            cmd = [binary, "quantize", model, "-o", out, *flags, "--weight-range", a.weight_range, "--format", "json"]
            rc, secs, peak, kills, stdout = group.run(cmd)
            entry = {"status": rc, "seconds": secs, "cgroup_peak_bytes": peak, "oom_kills": kills, "command": " ".join(cmd)}
            if rc == 0:
                report = json.loads(stdout)
                entry.update(
                    output_bytes=size_of(files_of(out)),
                    process_peak_bytes=report.get("peak_memory_bytes"),
                    external_data=os.path.exists(out + ".data"),
                )
                outputs[name] = out
            results[name] = entry
            killed = " KILLED (OOM)" if kills or rc == -9 else ""
            vs_cp = f" ({secs / results['cp']['seconds']:.2f}x cp)" if "cp" in results else ""
            log(
                f"{name}: status {rc}{killed}, {secs:.1f} s{vs_cp}, external data {entry.get('external_data')}, "
                f"output {human(entry.get('output_bytes', 0))}, process peak {human(entry.get('process_peak_bytes') or 0)}, "
                f"cgroup peak {human(peak or 0)}"
            )
            failed |= rc != 0 or kills > 0
            if rc == 0 and results["weights_bytes"] > a.check_max_gb * 1e9:
                # Too large to hold the float model for an SNR: check the output loads and runs.
                entry["ort_smoke"] = ort_smoke(out)
                log(f"  ORT loads and runs it: {entry['ort_smoke']}")
                failed |= not entry["ort_smoke"]["finite"]
                for p in files_of(out):
                    os.remove(p)
                outputs.pop(name)

        if outputs and results["weights_bytes"] <= a.check_max_gb * 1e9:
            ort = ort_check(model, outputs, work)
            results["ort"] = ort
            log(f"ONNX Runtime, 1 thread, input [1, {TOKENS}, {HIDDEN}]: float {ort['float_ms']:.2f} ms/run")
            for name in outputs:
                r = ort[name]
                log(f"  {name}: SNR {r['snr_db']:.1f} dB, {r['ms']:.2f} ms/run, optimized graph {r['optimized_ops']}")
                failed |= not r["snr_db"] > (25 if name.startswith("int8") else 12)
        elif outputs:
            log(f"ORT check skipped: the model is over --check-max-gb {a.check_max_gb}")
    finally:
        group.remove()
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
