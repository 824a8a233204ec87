"""Fitting the bag-of-words model: one encoder and one codebook per token family.

``train_autoencoders`` fits the four encoders of a kind (``ENCODERS``) in turn and saves
``<family>.pt`` in a folder: ``trained`` autoencoders (the paper's), ``random`` (the same
autoencoders left at their seeded initialisation: a control) or ``pca`` (bow.bagofwords.pca:
the linear optimum, a control without training). Checkpoints go to
``.checkpoints-<fingerprint>/`` after every epoch, so a run stopped (even by SIGKILL) resumes
with the optimiser and random generator states and ends with the same models as a run that
never stopped; a family already saved with the same fingerprint is not trained again. Model
files hold no wall-clock times (the same seed, config and clips give the same bytes on CPU):
the times go to ``timings.json``.

``fit_codebooks`` encodes the grid tokens of the training chunks with the saved encoders
and fits a k-means codebook (bow.bagofwords.codebook) per family, saved as ``<family>.npz``
with its statistics in ``<family>.json``; for encoders of shape tokens, also the family's level
bins (bow.bagofwords.levels), ``<family>.levels.json``.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.codebook import Codebook, CodebookConfig, CodebookError
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.frames import KMEANS as FRAME_KMEANS
from bow.bagofwords.frames import FrameWords
from bow.bagofwords.levels import LevelBins
from bow.bagofwords.model import FRAMES_FILE, family_codes, load_encoder
from bow.bagofwords.pca import PCAEncoder
from bow.bagofwords.tokens import FAMILIES
from bow.io.stage import ArtifactError, load_torch, read_json, write_json

ENCODERS = ("trained", "random", "pca")
DEFAULT_ENCODER = "pca"    # measured best with shape tokens (benchmarks/bow_quality.py)
KINDS = {"trained": Autoencoder, "random": Autoencoder, "pca": PCAEncoder}


def _saved_fingerprint(path: Path) -> str | None:
    try:
        return load_torch(path, "bow autoencoder")["meta"].get("fingerprint")
    except (ArtifactError, KeyError, TypeError, AttributeError):  # missing or not ours: train it
        return None


def _timings(path: Path, fingerprint: str) -> dict:
    try:
        saved = read_json(path)
    except ArtifactError:
        saved = {}
    return saved if saved.get("fingerprint") == fingerprint else \
        {"fingerprint": fingerprint, "families": {}}


def train_autoencoders(logmel: torch.Tensor, val_logmel: torch.Tensor,
                       config: AutoencoderConfig, encoder: str, out: Path, fingerprint: str,
                       device: torch.device, progress: bool = False) -> dict:
    """Fit log-mel (n, 96, 100), held out (m, 96, 100) -> ``out/<family>.pt`` for each family,
    of kind ``encoder`` ("random": the seeded initialisations, standardisation fitted).
    Returns {family: {best_epoch, val_mse, history}}."""
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    checkpoints = out / f".checkpoints-{fingerprint[:16]}"
    timings = _timings(out / "timings.json", fingerprint)
    model_config = dataclasses.replace(config, epochs=0) if encoder == "random" else config
    families = {}
    for family in FAMILIES:
        path = out / f"{family}.pt"
        if _saved_fingerprint(path) != fingerprint:
            start = time.perf_counter()
            ae = KINDS[encoder](family, model_config, device, checkpoints / f"{family}.pt",
                                progress)
            ae.fit(logmel, val_logmel)
            epoch_seconds = [h.pop("seconds", None) for h in ae.history_]  # not in the model
            ae.save(path, meta={"fingerprint": fingerprint})
            timings["families"][family] = {"seconds": time.perf_counter() - start,
                                           "epoch_seconds": epoch_seconds}
            write_json(out / "timings.json", timings)
        saved = load_encoder(path)
        families[family] = {"best_epoch": saved.best_epoch_,
                            "val_mse": saved.history_[saved.best_epoch_]["val_mse"],
                            "history": saved.history_}
    return families


def fit_codebooks(autoencoders: Path, logmel: torch.Tensor, config: CodebookConfig, out: Path,
                  device: torch.device, gpu: bool | str = "auto", level_bins: int = 16,
                  frame_codes: int = 0, frame_stats: int = 0) -> dict:
    """Codes of the grid tokens of log-mel (n, 96, 100) through ``autoencoders/<family>.pt`` ->
    ``out/<family>.npz`` (+ .json statistics), and for shape tokens ``level_bins`` level bins
    ``out/<family>.levels.json`` (none when 0); ``frame_codes`` frame words
    (bow.bagofwords.frames, ``config``'s k-means but bow.bagofwords.frames.KMEANS's iterations
    and restarts) -> ``out/frames.npz`` (none when 0), with ``frame_stats`` statistics words
    per chunk statistic (0: none).
    Returns {family or "frames.<stream>": statistics without sizes}."""
    families = {}
    for family in FAMILIES:
        encoder = load_encoder(autoencoders / f"{family}.pt", device)
        levels = out / f"{family}.levels.json"
        levels.unlink(missing_ok=True)
        if encoder.config.tokens == "shape" and level_bins:
            LevelBins(family, level_bins).fit(logmel).save(levels)
        codes = family_codes(encoder, logmel, family)
        book = Codebook(config, gpu=gpu)
        try:
            book.fit(codes.cpu().numpy())
        except CodebookError as e:
            raise CodebookError(f"{family} codebook: {e}") from None
        book.save(out / f"{family}.npz")
        families[family] = {k: v for k, v in book.stats_.items() if k != "sizes"}
    (out / FRAMES_FILE).unlink(missing_ok=True)
    if frame_codes:
        frames = FrameWords(dataclasses.replace(config, n_codes=frame_codes, **FRAME_KMEANS), gpu,
                            stat_bins=frame_stats)
        try:
            frames.fit(logmel)
        except CodebookError as e:
            raise CodebookError(f"frame words: {e}") from None
        frames.save(out / FRAMES_FILE)
        families.update({f"frames.{s}": {k: v for k, v in book.stats_.items() if k != "sizes"}
                         for s, book in frames.codebooks.items()})
    return families
