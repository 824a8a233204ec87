"""openSMILE's ComParE_2016 features of 16 kHz mono audio (``bow.audio.load.read_audio``'s).

openSMILE is audEERING's feature extractor; its Python package ``opensmile`` (binary included)
is an optional extra of bow, ``pip install "bow-audio[opensmile]"``: its licence allows research
use only. Nothing here imports it until a feature is asked for; ``available()`` says whether it
is installed, and ``require()`` raises ``OpenSmileMissing`` (one line: how to install it, and
the licence) when it is not.

    functionals(audio)        (6373,) float32   ComParE_2016 functionals of the whole clip
    chunk_functionals(audio)  (n_chunks, 6373)  of each 1 s chunk of bow.audio.load.chunk(audio)
    frames(audio)             (T, 130) float32, (T,) float32 ms: 65 low-level descriptors (LLDs)
                              then their 65 deltas per 10 ms frame, and each frame's start
    n_frames(n_samples)       T for a signal of n_samples
    feature_names(level)      the names of those columns ("functionals" or "frames")
    finite(x)                 x with non-finite values set to 0, and how many there were

Decisions (measured with opensmile 2.6.0 on the development machine):

* Chunks are exactly the other stores' (``bow.audio.load.chunk``: same tail rule, the last one
  zero-padded to 1 s), each run through openSMILE on its own, so a store's chunk rows join the
  bag of words' row by row. openSMILE sets up its whole pipeline for every signal (~50 ms here),
  so a clip of n chunks costs n + 1 set-ups: the chunk rows took 2.5 times the CPU time of the
  clip's own functionals (benchmarks.opensmile_speed, README).
* Input is clipped to [-1, 32767/32768]: the package scales by 32768 and casts to int16
  without clipping, so samples beyond would wrap around (1.0 became -1 and 1.5 became -0.5).
* A signal shorter than ``MIN_SAMPLES`` (960 = 60 ms, openSMILE's longest analysis window: F0
  and voice quality; the other LLDs use 20 ms) is zero-padded to it. Below it openSMILE emits no
  frame and the package fills the functionals with NaN (959 samples: all 6,373 NaN; 960: none).
  No input of 960 samples or more that we tried gave a non-finite value (silence, DC, a click,
  a square wave, noise at 1e-30 and at 1e6). ``finite`` is the guard the store and the HEAR
  module apply all the same.
* Frames: the LLD and delta levels each give one row per frame start k * 10 ms (k = 0, 1, ...),
  and may repeat the last start with a frame cut short by the end of the signal: rows are joined
  on their start, keeping the first (complete) row of each. T = (n - 960) // 160 + 1 frames for
  n >= 1280 samples; shorter signals give 2 (the second cut short) (``n_frames``, checked
  against openSMILE in the tests). openSMILE's frame spans are [start, start + 60 ms].
"""
from __future__ import annotations

import importlib.metadata
import importlib.util

import numpy as np

from bow.audio.load import MIN_TAIL_S, SAMPLE_RATE, chunk
from bow.environment import DependencyError

FEATURE_SET = "ComParE_2016"
N_FUNCTIONALS = 6373
N_LLD = 65
FRAME_DIM = 2 * N_LLD      # LLDs, then their deltas
HOP_MS = 10.0              # frame step
FRAME_MS = 60.0            # the span openSMILE gives each frame (its longest window)
MIN_SAMPLES = 960          # 60 ms at 16 kHz: shorter signals are zero-padded to it
INT16_MAX = 32767 / 32768  # the largest sample the package's int16 cast keeps
INSTALL = 'pip install "bow-audio[opensmile]"'
LICENCE = "audEERING's openSMILE licence allows research use only"
MISSING = f"the opensmile package is not installed: {INSTALL} ({LICENCE})"
LEVELS = {"functionals": ("Functionals",),
          "frames": ("LowLevelDescriptors", "LowLevelDescriptors_Deltas")}


class OpenSmileMissing(DependencyError):
    """The optional ``opensmile`` package is not installed; the message says how to get it."""

    def __init__(self, detail: str = ""):
        super().__init__(MISSING + (f" [{detail}]" if detail else ""))


class OpenSmileError(RuntimeError):
    """openSMILE failed on a signal; the message says at which feature level and why."""


def available() -> bool:
    """True when the ``opensmile`` package can be found (it is not imported here)."""
    try:
        return importlib.util.find_spec("opensmile") is not None
    except (ImportError, ValueError):
        return False


def require():
    """The ``opensmile`` module; OpenSmileMissing when it is not installed or cannot import."""
    try:
        import opensmile
    except ImportError as e:
        raise OpenSmileMissing("" if e.name == "opensmile" else str(e)) from None
    return opensmile


def version() -> str:
    """The installed opensmile package's version; OpenSmileMissing without it."""
    require()
    return importlib.metadata.version("opensmile")


_SMILES: dict[str, object] = {}   # one extractor per feature level and process (~0.7 s each)


def _smile(level: str):
    if level not in _SMILES:
        opensmile = require()
        _SMILES[level] = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, FEATURE_SET),
                                         feature_level=getattr(opensmile.FeatureLevel, level))
    return _SMILES[level]


def prepare(audio: np.ndarray) -> np.ndarray:
    """(samples,) float -> (max(samples, MIN_SAMPLES),) float32 clipped to [-1, 32767/32768],
    zero-padded at the end (module docstring)."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected (samples,) mono audio, got shape {x.shape}")
    if x.shape[0] < MIN_SAMPLES:
        x = np.pad(x, (0, MIN_SAMPLES - x.shape[0]))
    return np.clip(x, -1.0, INT16_MAX)


def _failed(level: str, e: Exception) -> OpenSmileError:
    return OpenSmileError(f"openSMILE {FEATURE_SET} {level} failed: {e}")


def _run(level: str, x: np.ndarray):
    """Call openSMILE at ``level`` on a prepared signal: (starts s, values (frames, dims))."""
    smile = _smile(level)
    try:
        table = smile.process_signal(x, SAMPLE_RATE)
    except Exception as e:  # the package raises OpenSmileException, ValueError, RuntimeError...
        raise _failed(level, e) from e
    starts = table.index.get_level_values("start").total_seconds().to_numpy()
    return starts, table.to_numpy(dtype=np.float32)


def functionals(audio: np.ndarray) -> np.ndarray:
    """(samples,) 16 kHz -> (6373,) float32 ComParE_2016 functionals of the whole signal, as
    openSMILE gives them (non-finite values are possible in principle: ``finite``)."""
    _, values = _run("Functionals", prepare(audio))
    if values.shape != (1, N_FUNCTIONALS):
        raise OpenSmileError(f"openSMILE {FEATURE_SET} Functionals gave shape {values.shape}, "
                             f"expected (1, {N_FUNCTIONALS})")
    return values[0]


def chunk_functionals(audio: np.ndarray, min_tail: float = MIN_TAIL_S) -> np.ndarray:
    """(samples,) 16 kHz -> (n_chunks, 6373) float32: the functionals of each 1 s chunk of
    ``bow.audio.load.chunk(audio, min_tail)``, each chunk on its own."""
    return np.stack([functionals(c) for c in chunk(audio, min_tail)])


def _first_per_start(starts: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame starts in whole ms, sorted and unique, and the first row of each."""
    ms = np.rint(starts * 1000).astype(np.int64)
    unique, first = np.unique(ms, return_index=True)
    return unique, values[first]


def frames(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(samples,) 16 kHz -> (T, 130) float32 [65 LLDs, 65 deltas] per 10 ms frame, joined on
    the frame start, and (T,) float32 frame starts in ms (0, 10, 20, ...; module docstring)."""
    x = prepare(audio)
    (sa, a), (sb, b) = (_first_per_start(*_run(level, x)) for level in LEVELS["frames"])
    common, ia, ib = np.intersect1d(sa, sb, assume_unique=True, return_indices=True)
    return np.concatenate([a[ia], b[ib]], axis=1), common.astype(np.float32)


def n_frames(n_samples: int) -> int:
    """The number of frames ``frames`` gives for a signal of ``n_samples`` (module docstring)."""
    return 2 if n_samples < 1280 else (int(n_samples) - MIN_SAMPLES) // 160 + 1


def feature_names(level: str = "functionals") -> list[str]:
    """The column names of ``functionals`` (6,373) or ``frames`` (130: LLDs, then deltas)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {tuple(LEVELS)}, got {level!r}")
    return [name for lv in LEVELS[level] for name in _smile(lv).feature_names]


def finite(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``x`` as float32 with NaN and +-inf set to 0, and the number of values that were."""
    x = np.asarray(x, dtype=np.float32)
    bad = ~np.isfinite(x)
    n = int(bad.sum())
    return (np.where(bad, np.float32(0), x) if n else x), n
