"""The GIL is released while the engine works (another Python thread keeps running), and
Ctrl-C (SIGINT) raises KeyboardInterrupt promptly with nothing written."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import quantize_rs
from conftest import CLS


def long_job_data(n: int = 24) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, 3, 48, 192), dtype=np.float32)


def test_other_threads_keep_running_during_calibration(tmp_path):
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.005)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        start = time.perf_counter()
        quantize_rs.quantize_with_calibration(CLS, tmp_path / "c.onnx", calibration_data=long_job_data(), method="entropy")
        end = time.perf_counter()
    finally:
        stop.set()
        t.join()
    during = [x for x in ticks if start <= x <= end]
    gaps = np.diff(during)
    assert end - start > 0.3, "the job is too short to show anything"
    # A thread that sleeps 5 ms per tick gets well over half its ticks while the engine works,
    # and never waits long (holding the GIL for the whole job would give none).
    assert len(during) > 0.5 * (end - start) / 0.005 * 0.5, (len(during), end - start)
    assert gaps.max() < 0.25, gaps.max()


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to self")
def test_ctrl_c_interrupts_a_long_calibration(tmp_path):
    out = tmp_path / "c.onnx"
    data = long_job_data(48)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    start = time.perf_counter()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        quantize_rs.quantize_with_calibration(CLS, out, calibration_data=data, method="entropy")
    elapsed = time.perf_counter() - start
    timer.join()
    assert elapsed < 0.3 + 0.5, elapsed
    # Nothing is written, then or later (the abandoned job drops its result).
    time.sleep(0.1)
    assert not out.exists()
