"""Heads on feature sets larger than memory: training batches streamed from the stores.

A head holds its training chunks in memory as float32 when they fit its memory budget
(``memory_budget``); otherwise each epoch reads them in blocks of rows and shuffles within
windows of blocks:

* Blocks: ``block_rows`` consecutive training rows; a multiple of the stores' HDF5 chunk rows
  when a window of such blocks fits a quarter of the budget (each stored chunk is then read
  once per epoch), else as many rows as fit (each block then decompresses its whole stored
  chunk: a budget far below the stores' chunks, ~256 KiB x window x 4, is slow). Fused sets
  read each store's rows of a block side by side (bow.io.reader.ChunkMatrix).
* Shuffling: each epoch draws a permutation of the blocks, takes them ``window`` at a time, and
  permutes the rows of each window (one ``torch.randperm`` over its rows); batches are cut from
  that order, the rows left over by one window opening the next window's first batch. With
  all blocks in one window no block permutation is drawn and the rows of the window are the
  training rows in order, so the batches are those of the in-memory path (one
  ``torch.randperm`` over all rows): same seed, same weights (tests/heads/test_stream.py).
* Read-ahead: a thread reads the next window while the current one trains (a queue of one
  window: at most two raw windows and one normalised window in memory, about 3/4 of the
  budget). A window is read into one array and normalised, in its shuffled order, into one
  tensor, and the rows left over by a window are joined to the next one's first batch only
  (before, four transient copies of each window took the peak to 2x the budget, measured).
* Outside training batches: the normalisation statistics (one pass),
  validation and scoring read blocks of ``bow.heads.model.scoring_rows`` (at most 65,536 rows,
  fewer when their working copies would pass a quarter of ``--memory-budget-mb``, or of 1 GiB
  without one: a fixed size, so the same blocks in every run).
"""
from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import numpy as np
import torch

MEMORY_FRACTION = 0.5   # of the available memory, the default budget


def available_memory(device: torch.device) -> int:
    """Bytes of memory available now: RAM (MemAvailable of /proc/meminfo, else free pages)
    and, on CUDA, the smaller of that and the free GPU memory."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text()
                      .splitlines() if ":" in line)
        ram = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        ram = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if device.type == "cuda":
        return min(ram, torch.cuda.mem_get_info(device)[0])
    return ram


def memory_budget(mb: float, device: torch.device) -> int:
    """Bytes a head may hold: ``mb`` megabytes (2**20 bytes) when > 0, else
    ``MEMORY_FRACTION`` of ``available_memory``."""
    return int(mb * 2 ** 20) if mb > 0 else int(MEMORY_FRACTION * available_memory(device))


def float32_bytes(chunks) -> int:
    """Bytes of (M, D) chunk vectors held as float32."""
    return 4 * int(chunks.shape[0]) * int(chunks.shape[1])


def block_rows(chunks, budget: int, window: int) -> int:
    """Rows per streamed block (module docstring) for a budget in bytes."""
    rows = max(1, budget // (4 * window * 4 * max(int(chunks.shape[1]), 1)))
    aligned = getattr(chunks, "block_rows", 1)
    return rows // aligned * aligned if rows >= aligned else rows


def epoch_windows(n_rows: int, rows_per_block: int, window: int) -> list[np.ndarray]:
    """The training rows of each window of one epoch, in reading order (module docstring);
    draws the block permutation from torch's generator when there is more than one window."""
    starts = np.arange(0, n_rows, rows_per_block)
    if len(starts) > window:
        starts = starts[torch.randperm(len(starts)).numpy()]
    return [np.concatenate([np.arange(s, min(s + rows_per_block, n_rows))
                            for s in starts[i:i + window]])
            for i in range(0, len(starts), window)]


def _read_blocks(chunks, rows: np.ndarray, rows_per_block: int) -> np.ndarray:
    """(len(rows), D) raw rows of a window: each block (a run of rows) read as a slice into one
    array."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    runs = [r for run in np.split(rows, breaks)
            for r in np.split(run, np.arange(rows_per_block, len(run), rows_per_block))]
    out, at = None, 0
    for r in runs:
        block = np.asarray(chunks[r[0]:r[-1] + 1])
        if out is None:
            out = np.empty((len(rows),) + block.shape[1:], block.dtype)
        out[at:at + len(r)] = block
        at += len(r)
    return out


def read_ahead(chunks, windows: list[np.ndarray], rows_per_block: int):
    """Yield (rows, (len(rows), D) raw chunk vectors) per window, read one window ahead by a
    thread; an error in the thread is raised here."""
    out: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work():
        try:
            for rows in windows:
                if stop.is_set():
                    return
                out.put([(rows, _read_blocks(chunks, rows, rows_per_block))])   # a box
        except BaseException as e:  # handed to the consumer, which raises it
            out.put(e)
            return
        out.put(None)

    thread = threading.Thread(target=work, name="head-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item.pop()    # emptied: this frame keeps no reference to the window
    finally:
        stop.set()
        while thread.is_alive():   # unblock a pending put, then let the thread end
            try:
                out.get_nowait()
            except queue.Empty:
                thread.join(0.01)


def memory_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int):
    """One epoch of (inputs, labels) batches of tensors in memory: one permutation of rows."""
    order = torch.randperm(len(x)).to(x.device)
    for i in range(0, len(x), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


def streamed_batches(train, rows_per_block: int, window: int, batch_size: int, inputs,
                     device: torch.device):
    """One epoch of (inputs, labels) batches read from the stores of ``train`` (a FeatureSet);
    ``inputs`` maps raw (m, D) rows to normalised tensors on ``device``. The rows a window
    leaves over a whole batch start the next window's first batch, so every batch but the
    epoch's last holds ``batch_size`` rows, as in memory."""
    row_clip = np.repeat(np.arange(len(train)), np.diff(train.offsets))
    windows = epoch_windows(int(train.offsets[-1]), rows_per_block, window)
    x_left = y_left = None
    for rows, raw in read_ahead(train.chunks, windows, rows_per_block):
        order = torch.randperm(len(rows)).numpy()
        x = inputs(raw, order)                      # normalised, in ``order``: one tensor
        del raw
        y = torch.from_numpy(train.labels[row_clip[rows[order]]].astype(np.float32)).to(device)
        start = 0
        if x_left is not None:                      # the previous window's rows come first
            start = min(batch_size - len(x_left), len(x))
            x_left, y_left = torch.cat([x_left, x[:start]]), torch.cat([y_left, y[:start]])
            if len(x_left) < batch_size:
                continue
            yield x_left, y_left
        whole = start + (len(x) - start) // batch_size * batch_size
        for i in range(start, whole, batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        x_left, y_left = x[whole:].clone(), y[whole:].clone()   # not views holding x alive
        del x, y
    if x_left is not None and len(x_left):
        yield x_left, y_left
