"""Read audio ahead in threads while the model computes.

``read_ahead(clips, read, threads)`` yields ``(clip, result)`` in the clips' order, where
``result`` is what ``read(clip.path)`` returned or the ``AudioError`` it raised (any other
exception propagates). Up to ``ahead`` clips are read ahead by ``threads`` threads: libsndfile
decoding and torch resampling release the GIL, so on a CPU decoding overlaps the encoders' matmuls,
and on a GPU several threads keep it fed (decoding 44.1 kHz WAV and resampling it to 16 kHz took
1.2 ms per audio-second on one core of the development machine; FLAC at 16 kHz 0.35 ms).
``threads=0`` reads in the calling thread. Memory: at most ``ahead`` decoded clips wait.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bow.audio import AudioError

R = TypeVar("R")


def default_threads(device_type: str) -> int:
    """Decoding threads for a device: 1 beside CPU encoders, up to 8 to feed a GPU."""
    return 1 if device_type == "cpu" else max(1, min(8, (os.cpu_count() or 2) - 1))


def _attempt(read: Callable[..., R], path) -> R | AudioError:
    try:
        return read(path)
    except AudioError as e:
        return e


def read_ahead(clips: Iterable, read: Callable[..., R], threads: int = 1,
               ahead: int | None = None) -> Iterator[tuple[object, R | AudioError]]:
    """Yield (clip, read(clip.path) or its AudioError) in order, reading ahead in threads."""
    clips = iter(clips)
    if threads <= 0:
        for clip in clips:
            yield clip, _attempt(read, clip.path)
        return
    ahead = ahead or 2 * threads
    with ThreadPoolExecutor(threads, thread_name_prefix="read-ahead") as pool:
        pending: deque = deque()

        def submit(n: int) -> None:
            for clip in clips:
                pending.append((clip, pool.submit(_attempt, read, clip.path)))
                if len(pending) >= n:
                    break

        submit(ahead)
        try:
            while pending:
                clip, future = pending.popleft()
                submit(ahead)
                yield clip, future.result()
        finally:
            for _, future in pending:  # the consumer stopped early: drop what was not started
                future.cancel()
