"""What npdistil runs on: NumPy's BLAS, the kernel it chose, its threads, and what the CPU could
do. Matrix products are 70-80% of a forward pass, so a BLAS running below the CPU's best kernel
slows npdistil by nearly the same factor, silently: this is where that gets said.

Some machines set ``OPENBLAS_CORETYPE=Haswell`` in the environment (it pins OpenBLAS to its AVX2
kernels whatever the CPU). On an AVX-512 CPU that halves single-precision matrix products:
``check_blas()`` warns once, and ``report()`` (``npdistil doctor``) measures it.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
import time
import warnings
from typing import Any

import numpy as np

from .model import kernels

__all__ = [
    "SlowBlasWarning",
    "blas_info",
    "cpu_level",
    "check_blas",
    "measure_sgemm",
    "report",
    "version",
]

# Instruction-set levels, in order, and OpenBLAS's x86 kernel names (openblas_get_corename) at
# each. Names not listed are treated as unknown and never warned about.
LEVELS = ("sse", "avx", "avx2", "avx512")
_KERNEL_LEVEL = {
    **dict.fromkeys(("katmai", "coppermine", "northwood", "prescott", "core2", "penryn"), "sse"),
    **dict.fromkeys(("nehalem", "dunnington", "atom", "opteron", "barcelona", "bobcat"), "sse"),
    **dict.fromkeys(("sandybridge", "bulldozer", "piledriver", "steamroller"), "avx"),
    **dict.fromkeys(("haswell", "zen", "excavator", "atomx"), "avx2"),
    **dict.fromkeys(("skylakex", "cooperlake", "sapphirerapids"), "avx512"),
}
# Floating-point work of one token through distilbert-base-cased at 128 tokens: 2 x the
# multiply-adds of the linear layers (6 x 7.08 M) plus attention's 2 x 2 x T x D per layer.
FLOP_PER_TOKEN = 6 * (2 * (4 * 768 * 768 + 2 * 768 * 3072) + 4 * 128 * 768)


class SlowBlasWarning(RuntimeWarning):
    """NumPy's BLAS runs a kernel older than the CPU supports."""


def cpu_level(flags: set[str] | None = None) -> str | None:
    """The best x86 instruction-set level the CPU offers (from /proc/cpuinfo), or None.

    >>> cpu_level({"sse2", "avx", "avx2", "fma"})
    'avx2'
    """
    if flags is None:
        flags = _cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    if "avx" in flags:
        return "avx"
    return "sse" if "sse2" in flags else None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list[dict[str, Any]]:
    """threadpoolctl's view of NumPy's BLAS: library, version, kernel ("architecture"),
    threads ([] without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [i for i in threadpool_info() if i.get("user_api") == "blas"]


def slow_kernel(
    info: list[dict[str, Any]] | None = None, level: str | None = "this CPU's"
) -> dict[str, Any] | None:
    """The BLAS library (default: NumPy's) running a kernel below the instruction-set ``level``
    (default: this CPU's; None: unknown, never slow), if any.

    >>> haswell = {"internal_api": "openblas", "architecture": "Haswell"}
    >>> slow_kernel([haswell], "avx512")["architecture"]
    'Haswell'
    >>> slow_kernel([haswell], "avx2") is None
    True
    """
    info = blas_info() if info is None else info
    level = cpu_level() if level == "this CPU's" else level
    if level is None:
        return None
    for lib in info:
        kernel = _KERNEL_LEVEL.get(str(lib.get("architecture", "")).lower())
        if kernel is not None and LEVELS.index(kernel) < LEVELS.index(level):
            return lib
    return None


_checked = False


def check_blas() -> None:
    """Warn once per process when BLAS runs a kernel older than the CPU supports."""
    global _checked
    if _checked:
        return
    _checked = True
    lib = slow_kernel()
    if lib is None:
        return
    forced = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_CORETYPE")}
    cause = (
        f"because {', '.join(f'{k}={v}' for k, v in forced.items())} is set"
        if forced
        else "(an old OpenBLAS build, or one built for an older CPU)"
    )
    warnings.warn(
        f"NumPy's BLAS runs its {lib.get('architecture')} kernel {cause}, but this CPU supports "
        f"{cpu_level()}: matrix products, and npdistil with them, run at about half speed. "
        + (
            "Unset OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) to let OpenBLAS pick the CPU's kernel. "
            if forced
            else ""
        )
        + "`npdistil doctor` measures it.",
        SlowBlasWarning,
        stacklevel=3,
    )


def measure_sgemm(seconds: float = 1.0, threads: int | None = None) -> float:
    """GFLOP/s of float32 products shaped like npdistil's (1024 x 768 @ 768 x 3072), run the way
    npdistil runs them: one BLAS thread per part, ``threads`` parts (default: npdistil's)."""
    n = kernels.n_threads() if threads is None else threads
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024 * n, 768), dtype=np.float32)
    b = rng.standard_normal((768, 3072), dtype=np.float32)
    outs = [np.empty((1024, 3072), np.float32) for _ in range(n)]

    def work(i: int, _: Any) -> None:
        np.matmul(a[1024 * i : 1024 * (i + 1)], b, out=outs[i])

    kernels.run_together(work, n)  # warm up: pages, packing buffers
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        kernels.run_together(work, n)
        runs += 1
    return 2 * 1024 * 768 * 3072 * n * runs / elapsed / 1e9


@functools.cache
def version() -> str:
    """npdistil's version as installed (pip's metadata, which pyproject.toml sets; read once)."""
    from importlib import metadata

    try:
        return metadata.version("npdistil")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def report(measure: bool = True) -> str:
    """What ``npdistil doctor`` prints: versions, BLAS, kernel, threads, CPU, and (with
    ``measure``) a two-second sgemm measurement and the speed it allows."""
    lines = [
        f"npdistil {version()}, NumPy {np.__version__}, Python {platform.python_version()}",
        f"CPU: {_cpu_model()} ({os.cpu_count()} logical cores, "
        f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable), "
        f"best instruction set: {cpu_level() or 'unknown'}",
    ]
    libs = blas_info()
    for lib in libs:
        lines.append(
            f"BLAS: {lib.get('internal_api')} {lib.get('version')} ({lib.get('threading_layer')}), "
            f"kernel {lib.get('architecture')}, {lib.get('num_threads')} threads: "
            f"{lib.get('filepath')}"
        )
    if not libs:
        lines.append("BLAS: unknown (threadpoolctl can't see it): npdistil runs on one thread")
    env = {k: v for k, v in os.environ.items() if k.startswith(("OPENBLAS_", "OMP_", "MKL_"))}
    lines.append(f"environment: {env or 'no BLAS variables set'}")
    lines.append(
        f"npdistil threads: {kernels.n_threads()} (BLAS's thread count, at most the cores)"
    )
    slow = slow_kernel(libs)
    if slow is not None:
        lines.append(
            f"WARNING: the {slow.get('architecture')} kernel is below this CPU's "
            f"{cpu_level()}: products run at about half speed"
        )
    if measure:
        one = measure_sgemm(1.0, threads=1)
        lines.append(f"sgemm, 1 thread: {one:.0f} GFLOP/s")
        n = kernels.n_threads()
        if n > 1:
            many = measure_sgemm(1.0, threads=n)
            lines.append(f"sgemm, {n} threads: {many:.0f} GFLOP/s")
        else:
            many = one
        lines.append(
            f"ceiling for distilbert-base-cased at 128 tokens ({FLOP_PER_TOKEN / 1e6:.1f} MFLOP "
            f"a token): {many * 1e9 / FLOP_PER_TOKEN:,.0f} tokens/s"
        )
        if slow is not None and os.environ.get("OPENBLAS_CORETYPE"):
            alt = _measure_without_forced_kernel(n)
            if alt:
                lines.append(f"with OPENBLAS_CORETYPE unset: {alt}")
    return "\n".join(lines)


def _measure_without_forced_kernel(n: int) -> str | None:
    """The same measurement in a child process without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    code = (
        "from npdistil import system, kernels; import threadpoolctl;"
        "k = system.blas_info()[0].get('architecture');"
        f"print(k, round(system.measure_sgemm(1.0, threads={n})))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    kernel, gflops = out.stdout.split()[-2:]
    return f"kernel {kernel}, sgemm {n} thread(s): {gflops} GFLOP/s"
