"""A fresh virtual environment: `pip install ./python` from the checkout (PEP 517, maturin),
import, quantize. Run by .ci/run; elsewhere opt-in (QUANTIZE_RS_SMOKE=1), as it builds the
extension again (seconds when the workspace's release build is current, minutes when not)."""

from __future__ import annotations

import os
import subprocess
import sys
import venv

import pytest

from conftest import DIGITS, ROOT


@pytest.mark.skipif(os.environ.get("QUANTIZE_RS_SMOKE") != "1", reason="set QUANTIZE_RS_SMOKE=1 (CI does)")
def test_pip_install_into_a_fresh_venv(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(ROOT / "python")],
        check=True,
        cwd=tmp_path,
    )
    script = (
        "import sys, quantize_rs\n"
        "r = quantize_rs.quantize(sys.argv[1], sys.argv[2])\n"
        "assert r.report.quantized and r.bytes_out < r.bytes_in, r\n"
        "print(quantize_rs.__version__, quantize_rs.__file__)\n"
    )
    out = subprocess.run(
        [str(py), "-c", script, str(DIGITS), str(tmp_path / "q.onnx")],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    # The package comes from the new venv, not from the checkout or the project venv.
    assert str(env_dir) in out.stdout, out.stdout
    assert (tmp_path / "q.onnx").exists()
