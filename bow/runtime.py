"""Devices, seeds, reduced-precision inference (``--precision``), one-thread kernels.

``--precision`` of the embedding stages (default ``fp32``):

* ``fp32``: plain float32 everywhere. On CUDA this also turns TF32 *off* for matmuls and cuDNN
  convolutions inside the encoders (PyTorch enables it for cuDNN by default), so the CPU and the
  GPU compute the same thing up to summation order.
* ``tf32`` (CUDA only): matmuls and convolutions of the encoders on TF32 tensor cores (10-bit
  mantissa inputs, float32 accumulation); activations stay float32.
* ``bf16``: the encoders under ``torch.autocast(dtype=bfloat16)`` on CUDA or the CPU: matmuls in
  bfloat16 (8-bit mantissa inputs, float32 accumulation), layer norms in float32; the
  bag-of-words encoders do it explicitly (bow.bagofwords.encoder: inputs centred in float32,
  last layer in float32). On a CPU with AVX512-BF16 or AMX (AMD Zen 4, Intel Sapphire Rapids
  and later) bfloat16 matmuls ran 2.3x faster than float32 on one thread of the development
  machine (oneDNN); on CPUs without them they are slower than float32: measure first
  (``python -m benchmarks.embed_speed --runs 1x1,1x1:bf16``).

Only the encoders (autoencoder MLPs, KW-MLP blocks) run at reduced precision: the front ends
(STFT, mel, dB, DCT), k-means assignment and scene interpolation stay float32, since a dB floor
or a nearest-centroid search is where low precision would hurt most for the least speed.

The accuracy check (``compare_codes``, ``compare_embeddings``; run by
``python -m benchmarks.precision_check`` and tests/test_scale.py when CUDA is present) measures
the drift against fp32 on real clips: relative error of the codes and embeddings, and the
fraction of code ids (nearest centroids) that stay the same.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

KERNEL_THREADS = 1   # torch intra-op threads of every embedding kernel (``one_thread``)
_BLAS = ThreadpoolController()


def one_thread():
    """Run the block with torch on ``KERNEL_THREADS`` (one) intra-op thread in the calling
    thread, then restore its count; usable as a decorator. Other threads are not affected
    (torch 2.11 keeps OpenMP's and MKL's counts per thread: ``mkl_set_num_threads_local``).

    Why (issue 23): a BLAS or FFT kernel's float rounding can depend on how many threads split
    the work. On the development machine (AMD EPYC, AVX2, torch 2.11 with MKL) 1 and 2 threads
    gave equal bits for every embedding kernel, but from 3 threads the MFCC's mel matmul
    ((1568, 241) @ (241, 40)) and the KW-MLP / Audio-MLP embeddings of 64 ESC-10 clips changed
    in 96 % and 33 % of their values; on the machine of the issue 2 threads already moved two
    soft-assigned tokens of the bag of words (1,064 clips). Exact arithmetic that does not
    depend on the summation order (float64 accumulation, certified, rounded once to float32)
    would cost 2.2x the encoders' float32 matmuls at the paper's sizes (one thread, (256, 2048)
    @ (2048, 2048): 54.6 against 25.7 ms) and would leave the FFT, layer norms and GELUs
    exposed; one thread costs nothing in a process that has one core to itself, and the
    stages spread the work over processes instead (``--jobs``, Dask; bow.io.sharded).
    Measured end to end: see bow.io.sharded.
    """
    return torch_threads(KERNEL_THREADS)


def numpy_one_thread():
    """Run the block with numpy's BLAS (OpenBLAS) on one thread (threadpoolctl): the exact
    nearest-code search (bow.bagofwords.nearest) multiplies small blocks, for which waking a
    second BLAS thread cost more than the product (measured on a busy 2-core machine: 600 patch
    codes against 256 centroids, 21 ms a call with 2 threads, 4.5 ms with one). The result does
    not depend on it (the search is exact whatever the summation order)."""
    return _BLAS.limit(limits=1, user_api="blas")


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with torch on ``n`` intra-op threads in the calling thread, then restore
    its count (threads started in the block take ``n``). Set even when torch already reports
    ``n``: that is OpenMP's count, which faiss.omp_set_num_threads also sets, while MKL's may
    differ (measured: an eigendecomposition then ran on MKL's other count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class DeviceError(ValueError):
    """A device that does not exist here (e.g. --device cuda without a CUDA device)."""


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu' / 'cuda' / 'cuda:N' as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {device} asked for, but torch sees no CUDA device")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise DeviceError(f"--device {device}: not a device ({e})") from None


def generator(seed: int) -> torch.Generator:
    """A CPU torch generator seeded with ``seed`` (draw on CPU, move to the device after)."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g

PRECISIONS = ("fp32", "tf32", "bf16")


class PrecisionError(ValueError):
    """An unknown precision, or one the device cannot run (tf32 off CUDA)."""


def check_precision(precision: str, device: str | torch.device) -> None:
    """Raise PrecisionError for an unknown precision, tf32 off CUDA, or bf16 on a device that
    is neither CUDA nor the CPU."""
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    kind = torch.device(device).type
    if precision == "tf32" and kind != "cuda":
        raise PrecisionError(f"precision tf32 needs a CUDA device (got {device}); use fp32 or "
                             "bf16 on the CPU")
    if precision == "bf16" and kind not in ("cuda", "cpu"):
        raise PrecisionError(f"precision bf16 runs on CUDA or the CPU (got {device})")


@contextlib.contextmanager
def encoder_precision(precision: str, device: str | torch.device):
    """Run the block under ``precision`` on ``device`` (see the module docstring)."""
    check_precision(precision, device)
    if torch.device(device).type != "cuda":
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_error(got, want) -> float:
    """max |got - want| / max |want| (0 when both are zero)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.abs(want).max() if want.size else 0.0
    diff = np.abs(got - want).max() if want.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def compare_embeddings(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict:
    """{name: array} at reduced precision vs fp32 -> {name_relerr: max error / max |fp32|}."""
    return {f"{k}_relerr": relative_error(got[k], want[k]) for k in want}


def compare_codes(got_ids: dict[str, np.ndarray], want_ids: dict[str, np.ndarray],
                  got_counts: np.ndarray, want_counts: np.ndarray) -> dict:
    """Bag-of-words drift: per family the fraction of tokens whose code id is unchanged, and the
    mean L1 distance between chunk count vectors over the 2 x 143 tokens that could move."""
    out = {f"{f}_same_ids": float((got_ids[f] == want_ids[f]).mean()) for f in want_ids}
    moved = np.abs(got_counts.astype(np.int64) - want_counts.astype(np.int64)).sum(1)
    out["counts_l1_per_chunk"] = float(moved.mean()) if moved.size else 0.0
    out["chunks_unchanged"] = float((moved == 0).mean()) if moved.size else 1.0
    return out
