"""proc_measure.py: shared helpers for real_models.py and bench_quantize.py.

* run_measured(cmd): run a command as a child process and return its exit code,
  wall time and peak resident set size (RSS).
* machine_info(): nproc, CPU model, memory, versions.
* REPO_ROOT: the repository root (parent of scripts/).

How peak RSS is measured: with GNU time (`/usr/bin/time -f %M -o FILE`) when
it is installed, else with a tiny Python launcher (`python -I -S`) that forks,
execs the command and reaps it with os.wait4. Either way the number is the
child's own ru_maxrss (KiB on Linux). The launcher matters: on Linux a process's
ru_maxrss starts at the RSS of whatever it was forked/vforked from (exec keeps
the old address space's high-water mark), so measuring directly from a parent
that holds ORT sessions and images would report the parent's size as the
child's floor. GNU time's floor is ~1-2 MB, the Python launcher's ~8 MB (the
"rss_method" field says which was used). Polling /proc/PID/status VmHWM would
miss the last moments before exit, and getrusage(RUSAGE_CHILDREN) is a max over
all children so far. Commands are run directly, not through a shell. Wall time
is perf_counter around spawn..exit of the launcher (~1 ms overhead). On timeout
the whole process group (started with start_new_session) is killed.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent


GNU_TIME = "/usr/bin/time"

# Launcher used when GNU time is absent: argv = [result_file, cmd...].
_LAUNCHER = r"""
import os, sys
out, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        sys.stderr.write("launcher: cannot run %s: %s\n" % (cmd[0], e))
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write("%d\n" % ru.ru_maxrss)
code = os.waitstatus_to_exitcode(status)
sys.exit(128 - code if code < 0 else code)
"""


def _have_gnu_time() -> bool:
    if not os.access(GNU_TIME, os.X_OK):
        return False
    try:
        r = subprocess.run([GNU_TIME, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return "GNU" in (r.stdout + r.stderr)


_GNU_TIME_OK: Optional[bool] = None


def rss_method() -> str:
    global _GNU_TIME_OK
    if _GNU_TIME_OK is None:
        _GNU_TIME_OK = _have_gnu_time()
    return "gnu-time" if _GNU_TIME_OK else "python-launcher"


def run_measured(cmd: List[str], timeout: Optional[float] = None, env: Optional[Dict[str, str]] = None) -> dict:
    """Run cmd; return {"rc", "wall_s", "peak_rss_mb", "stdout", "stderr", "timed_out", "rss_method"}.

    rc is the command's exit code (128+N when it died from signal N, as a shell
    reports it); peak_rss_mb is None if it could not be read.
    stdout/stderr go through temporary files (no pipe deadlock on big output).
    """
    method = rss_method()
    with tempfile.TemporaryDirectory(prefix="measure-") as tmp:
        rss_file = os.path.join(tmp, "rss")
        if method == "gnu-time":
            full = [GNU_TIME, "-o", rss_file, "-f", "%M", "--", *cmd]
        else:
            full = [sys.executable, "-I", "-S", "-c", _LAUNCHER, rss_file, *cmd]
        with open(os.path.join(tmp, "out"), "w+b") as out, open(os.path.join(tmp, "err"), "w+b") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                full, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
            timed_out = False
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the group we started
                except OSError:
                    pass
                rc = proc.wait()
            wall = time.perf_counter() - t0
            if rc < 0:  # the launcher itself died from a signal (e.g. our timeout kill)
                rc = 128 - rc
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        peak = None
        try:
            with open(rss_file) as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            peak = int(lines[-1]) / 1024.0  # KiB -> MiB
        except (OSError, ValueError, IndexError):
            pass
    return {
        "rc": rc,
        "wall_s": wall,
        "peak_rss_mb": peak,
        "stdout": stdout,
        "stderr": stderr,
        "timed_out": timed_out,
        "rss_method": method,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1024 * 1024), 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    info = {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_gib": _mem_total_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }
    for mod in ("onnxruntime", "onnx", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            info[mod] = None
    return info


def machine_line(info: dict) -> str:
    return (
        f"machine: nproc={info['nproc']} cpu='{info['cpu_model']}' mem={info['mem_total_gib']} GiB; "
        f"python {info['python']}, onnxruntime {info['onnxruntime']}, onnx {info['onnx']}"
    )
