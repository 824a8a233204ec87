"""Shared by the benchmarks: the machine's matmul floor, timing, and output as JSON lines + table.

The floor of a model is (measured fp32 matmul FLOP/s) / (model FLOPs per audio-second): the
throughput it would reach if every FLOP ran at matmul speed. Dividing a measured throughput by
the floor measured in the same run gives a ratio that compares across machines and loads.
"""
from __future__ import annotations

import json
import platform
import time

import torch


def matmul_flops(threads: int, device: str = "cpu", m: int = 4096, k: int = 2048, n: int = 2048,
                 seconds: float = 2.0, precision: str = "fp32") -> float:
    """Measured FLOP/s of an (m, k) @ (k, n) float32 matmul with ``threads`` torch threads,
    under bow.runtime.encoder_precision(``precision``) (fp32, or tf32 / bf16 where allowed)."""
    from bow.runtime import encoder_precision
    torch.set_num_threads(threads)
    a = torch.randn(m, k, device=device)
    b = torch.randn(k, n, device=device)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    with encoder_precision(precision, device):
        a @ b  # warm up
        sync()
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b
            reps += 1
        sync()
    return 2.0 * m * k * n * reps / (time.perf_counter() - start)


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": platform.processor() or platform.machine(), "gpu": gpu,
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}


def emit(rows: list[dict]) -> None:
    """Print each figure as one JSON line, then all of them as a table."""
    for row in rows:
        print(json.dumps(row, sort_keys=True))
    table(rows)


def table(rows: list[dict]) -> None:
    """Print rows as an aligned table (the keys of all rows as columns) after a blank line."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_fmt(row.get(k, "")) for k in keys] for row in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    print()
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
