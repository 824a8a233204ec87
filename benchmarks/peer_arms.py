"""The classic peers as arms of benchmarks.bow_quality, on the same clips, splits and probe.

* ``compare-functionals``: openSMILE's ComParE_2016 functionals of each clip (6,373-d), the
  feature set of the ComParE challenges since 2016.
* ``compare-xbow``: openXBOW's recipe (Schmitt & Schuller; its README's audio setting
  ``-standardizeInput -log -size 1000 -a 5``) written with the project's own parts: ComParE's
  65 low-level descriptors (LLDs) and their 65 deltas per 10 ms frame, two streams, each
  standardised with the training frames' mean and std, one k-means codebook of 1,000 words per
  stream (bow.bagofwords.codebook, fitted on the training frames only, seeded, with the k-means
  settings of our frame words: bow.bagofwords.frames.KMEANS), each frame
  counted once for each of its 5 nearest words (bow.bagofwords.nearest), clip histogram =
  the counts summed over the clip's frames, log(1 + count): 2,000-d. openXBOW's own codebooks
  are random draws of training frames by default; ours are k-means (the project's codebooks).
* ``compare-lld-stats``: mean and standard deviation of the 65 LLDs over the clip (130-d).

openSMILE (the optional ``opensmile`` extra, research use only) runs once per data set and arm
family; the arms are skipped with one line when it is not installed. The features are
computed from ``bow.audio.load.read_audio``'s 16 kHz mono samples, as every other arm.
"""
from __future__ import annotations

import time

import numpy as np

from bow.audio.load import read_audio
from bow.bagofwords.codebook import Codebook, CodebookConfig
from bow.bagofwords.frames import KMEANS as FRAME_KMEANS
from bow.peers import opensmile as osm
from bow.progress import progress

ARMS = ("compare-functionals", "compare-xbow", "compare-lld-stats")
XBOW = {"words": 1000, "nearest": 5}


def missing() -> str | None:
    """One line saying why the peer arms cannot run here, or None."""
    return None if osm.available() else f"peer arms skipped: {osm.MISSING}"


class PeerFeatures:
    """openSMILE's features of a data set's clips, computed on first use: ``functionals`` (N,
    6373), ``frames`` (F, 130) with ``frame_offsets`` (N + 1,); ``cpu_s``: the CPU seconds each
    took (decoding included)."""

    def __init__(self, clips):
        self.clips, self.cpu_s = clips, {}
        self._functionals = self._frames = None

    def _each(self, what: str, extract) -> list[np.ndarray]:
        start = time.process_time()
        out = [osm.finite(extract(read_audio(c.path)))[0]
               for c in progress(self.clips, desc=f"ComParE {what}", unit="clip")]
        self.cpu_s[what] = time.process_time() - start
        return out

    @property
    def functionals(self) -> np.ndarray:
        if self._functionals is None:
            self._functionals = np.stack(self._each("functionals", osm.functionals))
        return self._functionals

    @property
    def frames(self) -> np.ndarray:
        if self._frames is None:
            parts = self._each("frames", lambda audio: osm.frames(audio)[0])
            self._frames = np.concatenate(parts)
            self.frame_offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
        return self._frames


def lld_stats(peer: PeerFeatures) -> np.ndarray:
    """(N, 130) mean and std of the 65 LLDs over each clip's frames."""
    x, off = peer.frames[:, :osm.N_LLD].astype(np.float64), peer.frame_offsets
    return np.stack([np.concatenate([x[a:b].mean(0), x[a:b].std(0)])
                     for a, b in zip(off[:-1], off[1:])]).astype(np.float32)


def xbow(peer: PeerFeatures, fit_clips: np.ndarray, seed: int) -> np.ndarray:
    """(N, 2000) log(1 + counts) of the two streams (module docstring); codebooks and
    standardisation from the frames of the ``fit_clips`` ((N,) bool) only."""
    off = peer.frame_offsets
    clip_of = np.repeat(np.arange(len(off) - 1), np.diff(off))
    fit = np.repeat(fit_clips, np.diff(off))
    out = []
    for stream in (slice(0, osm.N_LLD), slice(osm.N_LLD, osm.FRAME_DIM)):
        x = peer.frames[:, stream].astype(np.float64)
        mean, std = x[fit].mean(0), x[fit].std(0)
        z = ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
        book = Codebook(CodebookConfig(n_codes=XBOW["words"], seed=seed, **FRAME_KMEANS),
                        gpu=False).fit(z[fit])
        ids, _ = book.nearest(z, XBOW["nearest"])
        counts = np.zeros((len(off) - 1, XBOW["words"]))
        np.add.at(counts, (np.repeat(clip_of, XBOW["nearest"]), ids.ravel()), 1.0)
        out.append(np.log1p(counts))
    return np.concatenate(out, axis=1).astype(np.float32)


def vectors(name: str, peer: PeerFeatures, fit_clips: np.ndarray, seed: int
            ) -> tuple[np.ndarray, float]:
    """The clip vectors of peer arm ``name`` (one of ``ARMS``), ready for the probe (no sqrt),
    and the CPU seconds they cost, openSMILE's extraction included."""
    used = "functionals" if name == "compare-functionals" else "frames"
    getattr(peer, used)                                  # extracted once, timed in cpu_s
    start = time.process_time()
    x = peer.functionals if name == "compare-functionals" else \
        lld_stats(peer) if name == "compare-lld-stats" else xbow(peer, fit_clips, seed)
    return x, time.process_time() - start + peer.cpu_s[used]
