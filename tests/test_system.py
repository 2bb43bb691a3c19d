"""npdistil.system: the BLAS npdistil runs on, the warning for a kernel below the CPU's, and
`npdistil doctor`."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from npdistil import system


@pytest.mark.parametrize(
    ("kernel", "cpu", "slow"),
    [
        ("Haswell", "avx512", True),
        ("SkylakeX", "avx512", False),
        ("Cooperlake", "avx512", False),
        ("Zen", "avx2", False),
        ("Sandybridge", "avx2", True),
        ("Haswell", None, False),  # CPU unknown: never warn
        ("SomethingNew", "avx512", False),  # kernel unknown: never warn
    ],
)
def test_slow_kernel_compares_the_kernel_with_the_cpu(kernel, cpu, slow):
    info = [{"internal_api": "openblas", "architecture": kernel}]
    assert (system.slow_kernel(info, cpu) is not None) == slow


def test_cpu_level_from_flags():
    assert system.cpu_level({"sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl"}) == (
        "avx512"
    )
    assert system.cpu_level({"sse2", "avx"}) == "avx"
    assert system.cpu_level(set()) is None


def test_check_blas_warns_once_naming_the_variable_to_unset(monkeypatch):
    monkeypatch.setattr(system, "_checked", False)
    monkeypatch.setattr(
        system, "blas_info", lambda: [{"internal_api": "openblas", "architecture": "Haswell"}]
    )
    monkeypatch.setattr(system, "cpu_level", lambda flags=None: "avx512")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    with pytest.warns(system.SlowBlasWarning, match="OPENBLAS_CORETYPE=Haswell is set") as seen:
        system.check_blas()
        system.check_blas()  # once per process
    assert len(seen) == 1 and "Unset OPENBLAS_CORETYPE" in str(seen[0].message)


def test_no_warning_when_the_kernel_matches_the_cpu(monkeypatch):
    monkeypatch.setattr(system, "_checked", False)
    monkeypatch.setattr(
        system, "blas_info", lambda: [{"internal_api": "openblas", "architecture": "SkylakeX"}]
    )
    monkeypatch.setattr(system, "cpu_level", lambda flags=None: "avx512")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        system.check_blas()


@pytest.mark.skipif(system.cpu_level() != "avx512", reason="needs an AVX-512 CPU")
def test_loading_a_model_with_a_forced_haswell_kernel_warns(tmp_path):
    """For real: a child process with OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU."""
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell", "NPDISTIL_CACHE": str(tmp_path)}
    code = "import npdistil; npdistil.load('tests/fixtures/tiny')"
    root = os.path.dirname(os.path.dirname(__file__))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "SlowBlasWarning" in out.stderr and "Haswell kernel" in out.stderr


def test_report_names_numpy_blas_threads_and_the_ceiling():
    text = system.report(measure=True)
    print(text)
    assert "NumPy" in text and "BLAS:" in text and "npdistil threads:" in text
    assert "sgemm, 1 thread:" in text and "tokens/s" in text


def test_npdistil_doctor_command():
    script = os.path.join(os.path.dirname(sys.executable), "npdistil")
    out = subprocess.run([script, "doctor", "--no-measure"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "BLAS:" in out.stdout and "npdistil threads:" in out.stdout
    assert "GFLOP/s" not in out.stdout  # --no-measure
