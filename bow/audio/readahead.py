"""Read audio ahead in threads while the model computes.

``read_ahead(clips, read, threads)`` yields ``(clip, result)`` in the clips' order, where
``result`` is what ``read(clip.path)`` returned or the ``AudioError`` it raised (any other
exception propagates). A dispatcher thread keeps ``threads`` reader threads busy for as long as
the decoded results waiting to be consumed hold less than ``budget`` bytes, so reading goes on
while the consumer computes a whole batch (a batch of 32 clips consumed at once must not find
only 2 clips read), and memory stays bounded whatever the clips' lengths (the budget can be
passed by the reads in flight, at most ``2 threads`` results). libsndfile decoding and torch
resampling release the GIL, so on a CPU decoding overlaps the encoders' matmuls, and on a GPU
several threads keep it fed (decoding 44.1 kHz WAV and resampling it to 16 kHz took 1.2 ms per
audio-second on one core of the development machine; FLAC at 16 kHz 0.35 ms).
``threads=0`` reads in the calling thread.
"""
from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from bow.audio.load import AudioError

R = TypeVar("R")
BUDGET = 64 << 20   # bytes of decoded audio waiting to be consumed (~1,000 s at 16 kHz)


def default_threads(device_type: str) -> int:
    """Decoding threads for a device: 1 beside CPU encoders, up to 8 to feed a GPU."""
    return 1 if device_type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def _attempt(read: Callable[..., R], path) -> R | AudioError:
    try:
        return read(path)
    except AudioError as e:
        return e


def _size(future: Future) -> int:
    if future.cancelled() or future.exception() is not None:
        return 0
    return int(getattr(future.result(), "nbytes", 0))


def read_ahead(clips: Iterable, read: Callable[..., R], threads: int = 1,
               budget: int = BUDGET) -> Iterator[tuple[object, R | AudioError]]:
    """Yield (clip, read(clip.path) or its AudioError) in order, reading ahead in threads."""
    if threads <= 0:
        for clip in clips:
            yield clip, _attempt(read, clip.path)
        return
    ordered: queue.Queue = queue.Queue()          # (clip, future) in order, then None
    cond = threading.Condition()
    state = {"running": 0, "held": 0, "stop": False}

    def finished(future: Future) -> None:
        with cond:
            state["running"] -= 1
            state["held"] += _size(future)
            cond.notify_all()

    def dispatch() -> None:
        try:
            for clip in clips:
                with cond:
                    cond.wait_for(lambda: state["stop"] or (
                        state["running"] < 2 * threads and state["held"] < budget))
                    if state["stop"]:
                        return
                    state["running"] += 1
                future = pool.submit(_attempt, read, clip.path)
                future.add_done_callback(finished)
                ordered.put((clip, future))
        except BaseException as e:  # e.g. an item without .path: raised to the consumer
            state["error"] = e
        finally:
            ordered.put(None)

    pool = ThreadPoolExecutor(threads, thread_name_prefix="read-ahead")
    dispatcher = threading.Thread(target=dispatch, name="read-ahead-dispatch", daemon=True)
    dispatcher.start()
    try:
        while (item := ordered.get()) is not None:
            clip, future = item
            result = future.result()
            with cond:
                state["held"] -= _size(future)
                cond.notify_all()
            yield clip, result
        if "error" in state:
            raise state["error"]
    finally:   # done, or the consumer stopped early: stop reading, drop what was not started
        with cond:
            state["stop"] = True
            cond.notify_all()
        dispatcher.join()
        pool.shutdown(wait=True, cancel_futures=True)


def read_batches(clips: Iterable, read: Callable[..., R], size: int, threads: int,
                 skipped: list) -> Iterator[list[tuple[object, R]]]:
    """``read_ahead`` in lists of at most ``size`` (clip, audio), readable clips only; each
    unreadable clip is appended to ``skipped`` as (clip.fname, reason)."""
    batch = []
    for clip, audio in read_ahead(clips, read, threads):
        if isinstance(audio, AudioError):
            skipped.append((clip.fname, str(audio)))
            continue
        batch.append((clip, audio))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
