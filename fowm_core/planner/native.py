"""The planner's fused row kernels (``fused_rows.c``), built with the system C compiler on first
use.

Why C: after stacking, a planning decision is ~75 GFLOP of matmul (MKL runs it near peak) and
~130 M activations of LayerNorm + Mish/tanh/ELU. torch runs those as separate passes with slow
transcendentals; one fused pass per row is an order of magnitude cheaper (docs/results.md "Speed",
docs/platform.md §15). The kernels are the same math as the model's layers (within 2e-6), tested
against torch.

The shared library is compiled once per (source, compiler, flags, CPU) into
``$FOWM_CACHE_DIR`` (default ``~/.cache/fowm``) with ``-march=native`` and OpenMP, written to a
temporary name and renamed, so concurrent processes never load a half-written file. It links the
process's libgomp (torch ships ``libgomp.so.1`` and the loader reuses it by soname), so the kernels
and torch share one thread pool. Without a compiler, or with ``FOWM_NATIVE=0``, ``load()`` returns
None and the planner uses its torch path; ``status()`` says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("fused_rows.c")
FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno",
         "-fno-trapping-math", "-fopenmp", "-fPIC", "-shared")
MAX_COLS = 8192   # fused_rows.c's stack row buffer

_lock = threading.Lock()
_state: dict[str, object] = {}


def cache_dir() -> Path:
    return Path(os.environ.get("FOWM_CACHE_DIR", Path.home() / ".cache" / "fowm")) / "native"


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(sorted(set(lines)))


def _build(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), compiler, version, *FLAGS,
                                    _cpu_id()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"fused_rows-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", tmp, "-lm"],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            msg = f"{compiler} failed on {SOURCE.name}: {result.stderr.strip()[:400]}"
            raise RuntimeError(msg)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, n, i = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
    lib.fowm_ln_act.argtypes = [p, n, n, n, p, p, p, n, i]
    lib.fowm_ln_act.restype = None
    lib.fowm_head_out.argtypes = [p, n, n, n, p, p, p, n, p, p, p, i]
    lib.fowm_head_out.restype = None
    lib.fowm_set_sgemm.argtypes = [p]
    lib.fowm_set_sgemm.restype = None
    lib.fowm_mm.argtypes = [p, p, p, n, n, n]
    lib.fowm_mm.restype = i
    lib.fowm_blocks.argtypes = [p, n, n, n, p, n, *([p] * 14), i]
    lib.fowm_blocks.restype = i
    lib.blocks_in_c = _hand_over_sgemm(lib)
    return lib


def _hand_over_sgemm(lib: ctypes.CDLL) -> bool:
    """Give the kernels torch's own BLAS sgemm (exported by libtorch_cpu as ``sgemm_``) so a whole
    imagined step runs in one call; checked on a small product (a 64-bit-integer BLAS would fail
    it). False: the planner runs the kernels stacked (FusedModel)."""
    try:
        torch_cpu = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        address = ctypes.cast(torch_cpu.sgemm_, ctypes.c_void_p).value
    except (OSError, AttributeError):
        return False
    lib.fowm_set_sgemm(address)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=gen), torch.randn(3, 4, generator=gen)
    c = torch.zeros(5, 4)
    if lib.fowm_mm(a.data_ptr(), b.data_ptr(), c.data_ptr(), 5, 3, 4) != 0 or not torch.allclose(
            c, a @ b, atol=1e-5):
        lib.fowm_set_sgemm(None)
        return False
    return True


def load() -> ctypes.CDLL | None:
    """The kernels, building them on first use; None (and ``status()`` says why) if unavailable."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib, why = None, "loaded"
        if os.environ.get("FOWM_NATIVE", "1") == "0":
            why = "disabled by FOWM_NATIVE=0"
        elif (compiler := os.environ.get("CC") or shutil.which("cc")
              or shutil.which("gcc")) is None:
            why = "no C compiler (set CC, or install gcc)"
        else:
            try:
                lib = _bind(ctypes.CDLL(str(_build(compiler))))
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                why = f"{type(err).__name__}: {err}"[:500]
        _state["lib"], _state["why"] = lib, why
        return lib


def status() -> str:
    load()
    return str(_state["why"])


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


def _check(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if t.dtype != torch.float32 or not t.is_contiguous() or tuple(t.shape) != shape:
        msg = (f"{name}: expected a contiguous float32 tensor of shape {shape}, got "
               f"{t.dtype} {tuple(t.shape)} contiguous={t.is_contiguous()}")
        raise ValueError(msg)


def ln_act_(lib: ctypes.CDLL, x: torch.Tensor, bias: torch.Tensor, ln_w: torch.Tensor,
            ln_b: torch.Tensor, n_mish: int) -> torch.Tensor:
    """In place on x (B, N, M): act(LayerNorm(x + bias)·ln_w + ln_b), Mish for blocks < n_mish
    and tanh after. bias, ln_w, ln_b: (B, M) (or (B, 1, M))."""
    blocks, rows, cols = x.shape
    for name, t in (("x", x), ("bias", bias), ("ln_w", ln_w), ("ln_b", ln_b)):
        _check(name, t.view(t.shape[0], -1) if name != "x" else t,
               (blocks, cols) if name != "x" else (blocks, rows, cols))
    if cols > MAX_COLS:
        raise ValueError(f"rows of {cols} columns exceed the kernel's {MAX_COLS}")
    lib.fowm_ln_act(_ptr(x), blocks, rows, cols, _ptr(bias), _ptr(ln_w), _ptr(ln_b), n_mish,
                    torch.get_num_threads())
    return x


def head_out(lib: ctypes.CDLL, x: torch.Tensor, bias: torch.Tensor, ln_w: torch.Tensor,
             ln_b: torch.Tensor, n_mish: int, w3: torch.Tensor, b3: torch.Tensor) -> torch.Tensor:
    """Scalar heads from the second matmul x (B, N, M): w3·act(x + bias) + b3 → (B, N, 1), where
    act is LayerNorm → affine → Mish for blocks < n_mish (ln_w/ln_b: (n_mish, M)), else ELU.
    w3: (B, M); b3: (B,)."""
    blocks, rows, cols = x.shape
    _check("x", x, (blocks, rows, cols))
    _check("bias", bias.view(blocks, -1), (blocks, cols))
    _check("w3", w3.view(blocks, -1), (blocks, cols))
    _check("b3", b3.view(-1), (blocks,))
    if n_mish:
        _check("ln_w", ln_w.view(n_mish, -1), (n_mish, cols))
        _check("ln_b", ln_b.view(n_mish, -1), (n_mish, cols))
    if cols > MAX_COLS:
        raise ValueError(f"rows of {cols} columns exceed the kernel's {MAX_COLS}")
    out = torch.empty(blocks, rows, 1)
    lib.fowm_head_out(_ptr(x), blocks, rows, cols, _ptr(bias), _ptr(ln_w), _ptr(ln_b), n_mish,
                      _ptr(w3), _ptr(b3), _ptr(out), torch.get_num_threads())
    return out
