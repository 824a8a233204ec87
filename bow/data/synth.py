"""The built-in default dataset: synthesised multi-label clips in the FSD50K release layout.

``make_default_dataset(root)`` writes, with no download::

    root/FSD50K.dev_audio/<id>.wav      n_dev clips (split train / val), ids 100000, 100001, ...
    root/FSD50K.eval_audio/<id>.wav     n_eval clips, ids 500000, 500001, ...
    root/FSD50K.ground_truth/dev.csv    fname,labels,mids,split
    root/FSD50K.ground_truth/eval.csv   fname,labels,mids
    root/FSD50K.ground_truth/vocabulary.csv   index,name,mid (no header)
    root/synth.json                     the generator's parameters (marks a complete dataset)

Eight classes with distinct spectro-temporal structure (``CLASSES``), each drawn with random
parameters (frequencies, rates, depths, spans) so they are learnable but not trivial:

    Steady_tone      one sinusoid, 250-4000 Hz (log-uniform)
    Rising_chirp     exponential sweep up 1.5-3.5 octaves from 150-900 Hz, over the event
    Falling_chirp    the same sweep downwards
    Noise_burst      1-4 bursts (80-400 ms) of noise band-passed 0.5-1.5 octaves around 300-5000 Hz
    Click_train      2-6 ms decaying broadband clicks at 4-25 per second, jittered
    AM_tone          carrier 300-3000 Hz, amplitude-modulated at 3-15 Hz, depth 0.7-1
    FM_tone          carrier 400-3000 Hz, vibrato 3-10 Hz, deviation 4-15% of the carrier
    Harmonic_stack   f0 100-400 Hz with partials up to 7 kHz (at most 20), amplitude k^-(0.5-1.5)

Each event occupies 40-100% of its clip (at least 0.35 s), with 10-50 ms fades. About
``mix_fraction`` (1/3) of the clips mix two different classes (the second 0-6 dB below the
first), so clips are multi-label; labels are listed loudest first, so the first label of a clip
is its dominant sound. Pink background noise is added at an SNR drawn from ``snr_db`` (10-30
dB), the peak is set between 0.3 and 0.9, and clips last ``min_seconds``-``max_seconds``
(0.5-4 s); 16 kHz PCM16 WAV. First labels are balanced within each part (shuffled); of the dev
clips of each first label, every 5th (``val_fraction`` 0.2) is in split ``val``, the others in
``train``. No ontology ancestors: the vocabulary is the eight classes.

The ``mids`` are made up and clearly synthetic: ``/synth/<lower-case class name>``.

Keyword-style (single-label) training, e.g. KW-MLP pretraining, can use the same folder: the
dev clips with one label (about two thirds), or every dev clip with its first (dominant) label.

Same seed, same bytes: each clip draws from its own generator seeded with (seed, part, index).
The dataset is written into a temporary folder beside ``root`` and renamed when complete, so a
killed run never leaves a half dataset; a complete one with the same parameters is kept.
"""
from __future__ import annotations

import collections
import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.fft import next_fast_len

from bow.audio.load import SAMPLE_RATE
from bow.data.datasets import DatasetError

CLASSES = ("Steady_tone", "Rising_chirp", "Falling_chirp", "Noise_burst", "Click_train",
           "AM_tone", "FM_tone", "Harmonic_stack")
MARKER = "synth.json"
FORMAT = 1
DEV_ID0, EVAL_ID0 = 100_000, 500_000


def mid(name: str) -> str:
    """The made-up machine id of a synthetic class, e.g. '/synth/steady_tone'."""
    return f"/synth/{name.lower()}"


def _loguniform(rng, low, high):
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _event(rng, name: str, n: int) -> np.ndarray:
    """(n,) one event of class ``name``: a span of 40-100% of the clip (at least 0.35 s), the
    class's signal over the span, raised-cosine fades of 10-50 ms, zeros elsewhere."""
    length = min(n, max(int(n * rng.uniform(0.4, 1.0)), int(0.35 * SAMPLE_RATE)))
    start = int(rng.integers(0, n - length + 1))
    x = _GENERATORS[name](rng, length)
    fade = min(int(rng.uniform(0.01, 0.05) * SAMPLE_RATE), length // 2)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        x[:fade] *= ramp
        x[length - fade:] *= ramp[::-1]
    out = np.zeros(n)
    out[start:start + length] = x
    return out


def _sweep(rng, n: int, rising: bool) -> np.ndarray:
    f0 = _loguniform(rng, 150, 900)
    f1 = min(f0 * 2 ** rng.uniform(1.5, 3.5), 7000.0)
    if not rising:
        f0, f1 = f1, f0
    freq = f0 * (f1 / f0) ** (np.arange(n) / max(n - 1, 1))
    return np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi))


def _band_noise(rng, n: int, centre: float, octaves: float) -> np.ndarray:
    m = next_fast_len(n, real=True)
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1 / SAMPLE_RATE)
    lo, hi = centre * 2 ** (-octaves / 2), centre * 2 ** (octaves / 2)
    return np.fft.irfft(spec * ((f >= lo) & (f <= hi)), m)[:n]


def _tone(rng, n):
    t = np.arange(n) / SAMPLE_RATE
    return np.sin(2 * np.pi * _loguniform(rng, 250, 4000) * t + rng.uniform(0, 2 * np.pi))


def _noise_bursts(rng, n):
    out = np.zeros(n)
    noise = _band_noise(rng, n, _loguniform(rng, 300, 5000), rng.uniform(0.5, 1.5))
    for _ in range(int(rng.integers(1, 5))):
        length = min(int(rng.uniform(0.08, 0.4) * SAMPLE_RATE), n)
        start = int(rng.integers(0, n - length + 1))
        out[start:start + length] = noise[start:start + length] * np.hanning(length)
    return out


def _clicks(rng, n):
    out = np.zeros(n)
    period = SAMPLE_RATE / rng.uniform(4, 25)
    decay = int(rng.uniform(0.002, 0.006) * SAMPLE_RATE)
    shape = np.exp(-np.arange(decay) / (decay / 4))
    pos = rng.uniform(0, period)
    while pos < n:
        i = int(pos)
        m = min(decay, n - i)
        out[i:i + m] += rng.standard_normal(m) * shape[:m]
        pos += period * rng.uniform(0.8, 1.2)
    return out


def _am(rng, n):
    t = np.arange(n) / SAMPLE_RATE
    depth = rng.uniform(0.7, 1.0)
    mod = 1 - depth / 2 + depth / 2 * np.cos(2 * np.pi * rng.uniform(3, 15) * t
                                               + rng.uniform(0, 2 * np.pi))
    return mod * np.sin(2 * np.pi * _loguniform(rng, 300, 3000) * t)


def _fm(rng, n):
    t = np.arange(n) / SAMPLE_RATE
    fc = _loguniform(rng, 400, 3000)
    rate, dev = rng.uniform(3, 10), fc * rng.uniform(0.04, 0.15)
    return np.sin(2 * np.pi * fc * t + dev / rate * np.sin(2 * np.pi * rate * t))


def _harmonic(rng, n):
    t = np.arange(n) / SAMPLE_RATE
    f0, alpha = _loguniform(rng, 100, 400), rng.uniform(0.5, 1.5)
    ks = np.arange(1, min(20, int(7000 / f0)) + 1)
    phases = rng.uniform(0, 2 * np.pi, len(ks))
    return sum(k ** -alpha * np.sin(2 * np.pi * k * f0 * t + p) for k, p in zip(ks, phases))


_GENERATORS = {
    "Steady_tone": _tone,
    "Rising_chirp": lambda rng, n: _sweep(rng, n, rising=True),
    "Falling_chirp": lambda rng, n: _sweep(rng, n, rising=False),
    "Noise_burst": _noise_bursts,
    "Click_train": _clicks,
    "AM_tone": _am,
    "FM_tone": _fm,
    "Harmonic_stack": _harmonic,
}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2))) + 1e-12


def pink_noise(rng, n: int) -> np.ndarray:
    """(n,) float64 noise with a 1/f power spectrum, unit RMS."""
    m = next_fast_len(n, real=True)
    spec = np.fft.rfft(rng.standard_normal(m))
    f = np.fft.rfftfreq(m, 1 / SAMPLE_RATE)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    x = np.fft.irfft(spec, m)[:n]
    return x / _rms(x)


def render_clip(rng: np.random.Generator, labels, seconds: float,
                snr_db=(10.0, 30.0)) -> np.ndarray:
    """One clip: the events of ``labels`` (class names, loudest first) + pink noise.

    Returns (round(seconds * 16000),) float32 with its peak between 0.3 and 0.9.
    """
    n = max(int(round(seconds * SAMPLE_RATE)), 1)
    mix = np.zeros(n)
    for i, name in enumerate(labels):
        event = _event(rng, name, n)
        gain = 1.0 if i == 0 else 10 ** (-rng.uniform(0, 6) / 20)
        mix += gain * event / _rms(event)
    mix += pink_noise(rng, n) * _rms(mix) * 10 ** (-rng.uniform(*snr_db) / 20)
    return (mix * rng.uniform(0.3, 0.9) / np.abs(mix).max()).astype(np.float32)


def _draw_rows(seed: int, part: int, n: int, params: dict) -> list[tuple[list[str], float, int]]:
    """Per clip of one part (0 dev, 1 eval): (labels, seconds, clip seed index)."""
    rng = np.random.default_rng([seed, part])
    firsts = rng.permutation(np.resize(np.arange(len(CLASSES)), n))
    rows = []
    for i, first in enumerate(firsts):
        labels = [CLASSES[first]]
        if rng.random() < params["mix_fraction"]:
            others = [c for c in range(len(CLASSES)) if c != first]
            labels.append(CLASSES[others[int(rng.integers(len(others)))]])
        rows.append((labels, float(rng.uniform(params["min_seconds"], params["max_seconds"])), i))
    return rows


def _write_part(folder: Path, seed: int, part: int, id0: int, n: int, params: dict):
    folder.mkdir(parents=True)
    out = []
    for labels, seconds, i in _draw_rows(seed, part, n, params):
        rng = np.random.default_rng([seed, part, i, 1])
        audio = render_clip(rng, labels, seconds, params["snr_db"])
        fname = str(id0 + i)
        sf.write(str(folder / f"{fname}.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
        out.append((fname, labels, i))
    return out


def write_fsd50k_ground_truth(gt_dir: Path, vocabulary, dev_rows, eval_rows) -> None:
    """Write FSD50K.ground_truth/{vocabulary,dev,eval}.csv.

    vocabulary: [(name, mid)]; dev_rows: [(fname, [labels], split)]; eval_rows: [(fname, [labels])].
    A label absent from ``vocabulary`` gets the mid '/synth/unknown'.
    """
    gt_dir.mkdir(parents=True, exist_ok=True)
    mids = dict(vocabulary)
    ids = lambda labels: ",".join(mids.get(x, "/synth/unknown") for x in labels)  # noqa: E731
    with open(gt_dir / "vocabulary.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(
            (i, name, m) for i, (name, m) in enumerate(vocabulary))
    with open(gt_dir / "dev.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["fname", "labels", "mids", "split"])
        w.writerows((fn, ",".join(labs), ids(labs), split) for fn, labs, split in dev_rows)
    with open(gt_dir / "eval.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["fname", "labels", "mids"])
        w.writerows((fn, ",".join(labs), ids(labs)) for fn, labs in eval_rows)


def _generate(folder: Path, params: dict) -> None:
    seed, frac = params["seed"], params["val_fraction"]
    every = max(int(round(1 / frac)), 1) if frac > 0 else 0
    dev = _write_part(folder / "FSD50K.dev_audio", seed, 0, DEV_ID0, params["n_dev"], params)
    ev = _write_part(folder / "FSD50K.eval_audio", seed, 1, EVAL_ID0, params["n_eval"], params)
    seen, dev_rows = collections.Counter(), []
    for fn, labs, _ in dev:  # every 5th clip of each first label is val: stratified
        seen[labs[0]] += 1
        dev_rows.append((fn, labs, "val" if every and seen[labs[0]] % every == 0 else "train"))
    write_fsd50k_ground_truth(folder / "FSD50K.ground_truth", [(c, mid(c)) for c in CLASSES],
                              dev_rows, [(fn, labs) for fn, labs, _ in ev])
    (folder / MARKER).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None


def _remove_leftovers(root: Path) -> None:
    """Delete temporary folders of generations whose process is gone (killed runs)."""
    for tmp in root.parent.glob(f".{root.name}.tmp-*"):
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


def make_default_dataset(root: str | Path, seed: int = 0, n_dev: int = 200, n_eval: int = 60,
                         val_fraction: float = 0.2, mix_fraction: float = 1 / 3,
                         min_seconds: float = 0.5, max_seconds: float = 4.0,
                         snr_db: tuple[float, float] = (10.0, 30.0)) -> Path:
    """Generate the default dataset into ``root`` unless it is already there; return ``root``.

    Raises DatasetError if ``root`` exists, is not empty and was not made by this function
    (it never deletes such a folder). A dataset made with other parameters is replaced.
    """
    root = Path(root)
    params = {"generator": "bow.synth", "format": FORMAT, "seed": int(seed), "n_dev": int(n_dev),
              "n_eval": int(n_eval), "val_fraction": float(val_fraction),
              "mix_fraction": float(mix_fraction), "min_seconds": float(min_seconds),
              "max_seconds": float(max_seconds), "snr_db": [float(s) for s in snr_db]}
    old = _read_marker(root)
    if old == params:
        return root
    if old is None and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"{root}: exists and was not made by bow.data.synth "
                           f"(no {MARKER}); refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    try:
        _generate(tmp, params)
        if _read_marker(root) == params:  # a concurrent run finished the same dataset first
            return root
        if root.exists():  # an empty folder, or ours with other parameters
            trash = root.parent / f".{root.name}.old-{os.getpid()}"
            os.rename(root, trash)
            shutil.rmtree(trash)
        os.rename(tmp, root)
    except OSError:
        if _read_marker(root) != params:  # not a concurrent run finishing the same dataset
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
