"""The bag-of-words model in one file: encoders, token standardisation, codebooks and config.

A bundle is an ``.npz`` (numpy's zip of ``.npy`` arrays) read with ``allow_pickle=False``, so
loading one never runs pickled code. Entries, for each family f of
``bow.bagofwords.tokens.FAMILIES``:

    config                      ()            str      JSON, below
    f.mean, f.std               (dim,)        float32  token standardisation
    (bow.bagofwords.autoencoder) f.encoder.{0,3,6}.weight    (out, in)     float32  the encoder's
    three Linear layers, named f.encoder.{0,3,6}.bias      (out,)        float32  as in its
    nn.Sequential state dict f.centroids                 (D, dim / F)  float32  the family's k-means
    codebook

config: ``format`` ("bow-bundle"), ``format_version``, ``families`` (order of the histograms),
``n_codes`` (D), ``normalise`` (count normalisation of the HEAR outputs: none, sqrt, log1p),
``autoencoders`` and ``codebooks`` (each family's constructor parameters), ``stats`` (best
epoch and validation MSE, k-means objective), ``code_version`` and ``meta`` (for bundles written
by pipelines.export_bundle: the fingerprint, the upstream stages' fingerprints and configs).

Decision: the decoders are left out. Embedding needs only the encoders, and leaving the decoders
out halves the file: the paper's sizes (F = 10, 2048 hidden units) hold 21.1 M encoder weights,
about 85 MB. Entries are stored uncompressed, as float32, so weights load bit for bit.

``read`` checks everything against the config before anything is built (every entry present,
no others, shapes implied by the parameters, float32, finite, positive std) and raises
``BundleError`` naming the file and the first problem. ``write`` writes atomically.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bow import __version__
from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.codebook import Codebook, CodebookConfig
from bow.bagofwords.model import NORMALISATIONS, BagOfWords
from bow.bagofwords.tokens import DIMS, FAMILIES
from bow.config import choose
from bow.io.stage import atomic_path, to_jsonable

FORMAT = "bow-bundle"
FORMAT_VERSION = 1
LINEAR_LAYERS = ("0", "3", "6")  # indices of the Linear layers in the encoder's nn.Sequential


class BundleError(ValueError):
    """A file that is not a usable bag-of-words bundle; the message names it and the problem."""


def _encoder_shapes(params: dict) -> dict[str, tuple[int, ...]]:
    """Autoencoder parameters -> {entry suffix: shape} of the encoder and standardisation."""
    dim, hidden = DIMS[params["family"]], int(params["hidden"])
    bottleneck = dim // int(params["factor"])
    sizes = [dim, hidden, hidden, bottleneck]
    shapes = {"mean": (dim,), "std": (dim,)}
    for i, (a, b) in zip(LINEAR_LAYERS, zip(sizes[:-1], sizes[1:])):
        shapes[f"encoder.{i}.weight"] = (b, a)
        shapes[f"encoder.{i}.bias"] = (b,)
    return shapes


def write(path: str | Path, bag: BagOfWords, normalise: str = "none",
          meta: dict | None = None) -> None:
    """Write the encoders and codebooks of ``bag`` (and the config) to ``path`` atomically."""
    choose("normalise", normalise, NORMALISATIONS)
    arrays, stats = {}, {}
    for f in FAMILIES:
        ae, cb = bag.encoders[f], bag.codebooks[f]
        arrays[f"{f}.mean"] = ae.mean_.detach().cpu().float().numpy()
        arrays[f"{f}.std"] = ae.std_.detach().cpu().float().numpy()
        for name, t in ae.encoder_.state_dict().items():
            arrays[f"{f}.encoder.{name}"] = t.detach().cpu().float().numpy()
        arrays[f"{f}.centroids"] = np.ascontiguousarray(cb.centroids_, dtype=np.float32)
        history = getattr(ae, "history_", None)
        best = getattr(ae, "best_epoch_", None)
        stats[f] = {"best_epoch": best,
                    "val_mse": history[best]["val_mse"] if history and best is not None else None,
                    "kmeans_objective": getattr(cb, "objective_", None)}
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "families": list(FAMILIES),
              "n_codes": bag.n_codes, "normalise": normalise,
              "autoencoders": {f: bag.encoders[f].get_params() for f in FAMILIES},
              "codebooks": {f: bag.codebooks[f].get_params() for f in FAMILIES},
              "stats": stats, "code_version": __version__, "meta": meta or {}}
    arrays["config"] = np.str_(json.dumps(to_jsonable(config), sort_keys=True))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


_READ_ERRORS = (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError)


def _open(path: Path) -> np.lib.npyio.NpzFile:
    """The archive, without pickles; BundleError if it is not an .npz archive."""
    try:
        z = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise BundleError(f"{path}: not a bow bundle (not a readable .npz archive: {e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise BundleError(f"{path}: not a bow bundle (a single .npy array, not an .npz archive)")
    return z


def _entry(path: Path, z, name: str) -> np.ndarray:
    try:
        return z[name]
    except _READ_ERRORS as e:
        raise BundleError(f"{path}: entry {name!r} cannot be read ({e})") from None


def read_config(path: str | Path) -> dict:
    """The config of a bundle (reads only that entry); BundleError if it is not a bundle."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file (write a bundle with "
                          "python -m pipelines.export_bundle)")
    with _open(path) as z:
        if "config" not in z.files:
            raise BundleError(f"{path}: no 'config' entry: not a bow bundle")
        text = _entry(path, z, "config")
        if text.dtype.kind != "U" or text.shape != ():
            raise BundleError(f"{path}: the 'config' entry is not a JSON string")
        text = str(text)
    try:
        config = json.loads(text)
    except ValueError as e:
        raise BundleError(f"{path}: the 'config' entry is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise BundleError(f"{path}: not a bow bundle (config format is "
                          f"{config.get('format') if isinstance(config, dict) else None!r})")
    if config.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {config.get('format_version')!r}; "
                          f"this code reads version {FORMAT_VERSION}")
    return config


def _check_types(path: Path, what: str, given: dict, defaults: dict) -> None:
    """Each parameter must have its default's type (an int may stand for a float)."""
    for key, default in defaults.items():
        value = given[key]
        kind = (int, float) if isinstance(default, float) else type(default)
        if default is not None and (not isinstance(value, kind) or
                                    (isinstance(value, bool) and not isinstance(default, bool))):
            raise BundleError(f"{path}: {what} parameter {key} = {value!r} is not a "
                              f"{type(default).__name__}")


def _check_config(path: Path, config: dict) -> None:
    if config.get("families") != list(FAMILIES):
        raise BundleError(f"{path}: families {config.get('families')} differ from "
                          f"{list(FAMILIES)}")
    if config.get("normalise") not in NORMALISATIONS:
        raise BundleError(f"{path}: normalise {config.get('normalise')!r} is not one of "
                          f"{NORMALISATIONS}")
    n_codes = config.get("n_codes")
    if not isinstance(n_codes, int) or n_codes < 1:
        raise BundleError(f"{path}: n_codes {n_codes!r} is not a positive integer")
    cb_defaults = Codebook().get_params()
    for f in FAMILIES:
        ae = config.get("autoencoders", {}).get(f)
        cb = config.get("codebooks", {}).get(f)
        if not isinstance(ae, dict) or not isinstance(cb, dict):
            raise BundleError(f"{path}: the config has no autoencoder or codebook for {f}")
        ae_defaults = Autoencoder(f).get_params()
        if set(ae) != set(ae_defaults) or set(cb) != set(cb_defaults):
            raise BundleError(f"{path}: the {f} parameters {sorted(ae)} / {sorted(cb)} are not "
                              f"those of this code's Autoencoder / Codebook")
        _check_types(path, f"the {f} autoencoder", ae, ae_defaults)
        _check_types(path, f"the {f} codebook", cb, cb_defaults)
        if ae.get("family") != f:
            raise BundleError(f"{path}: the {f} autoencoder is configured for family "
                              f"{ae.get('family')!r}")
        if not (isinstance(ae.get("factor"), int) and ae["factor"] > 0
                and DIMS[f] % ae["factor"] == 0 and isinstance(ae.get("hidden"), int)
                and ae["hidden"] > 0):
            raise BundleError(f"{path}: {f} autoencoder has an impossible shape (factor "
                              f"{ae.get('factor')!r}, hidden {ae.get('hidden')!r})")
        if cb.get("n_codes") != n_codes:
            raise BundleError(f"{path}: the {f} codebook has {cb.get('n_codes')} codes, the "
                              f"config says n_codes = {n_codes}")


@dataclass
class Bundle:
    """A validated bundle in memory: ``config`` (dict) and ``arrays`` (name -> numpy, CPU)."""
    path: Path
    config: dict
    arrays: dict[str, np.ndarray]

    @property
    def n_codes(self) -> int:
        return int(self.config["n_codes"])

    @property
    def normalise(self) -> str:
        return self.config["normalise"]

    def _autoencoder(self, family: str, device) -> Autoencoder:
        ae = Autoencoder.from_params(self.config["autoencoders"][family], device=device)
        ae._build()  # seeded layers of the right shapes, then the bundle's weights
        state = {name: torch.from_numpy(self.arrays[f"{family}.encoder.{name}"])
                 for name in ae.encoder_.state_dict()}
        ae.encoder_.load_state_dict(state, strict=True)
        ae.encoder_.eval()
        ae.decoder_ = None  # not in a bundle: embedding needs the encoder only
        ae.mean_ = torch.from_numpy(self.arrays[f"{family}.mean"]).to(device)
        ae.std_ = torch.from_numpy(self.arrays[f"{family}.std"]).to(device)
        return ae

    def _codebook(self, family: str) -> Codebook:
        cb = Codebook(CodebookConfig(**self.config["codebooks"][family]))
        cb.centroids_ = self.arrays[f"{family}.centroids"]
        stats = (self.config.get("stats") or {}).get(family) or {}  # informational only
        cb.objective_ = stats.get("kmeans_objective", float("nan"))
        return cb

    def bag(self, device: str | torch.device = "cpu") -> BagOfWords:
        """The encoders (on ``device``) and codebooks as a bow.bagofwords.model.BagOfWords."""
        return BagOfWords({f: self._autoencoder(f, device) for f in FAMILIES},
                          {f: self._codebook(f) for f in FAMILIES})


def read(path: str | Path) -> Bundle:
    """Read and validate a bundle written by ``write``; BundleError names the first problem."""
    path = Path(path)
    config = read_config(path)
    _check_config(path, config)
    expected = {}
    for f in FAMILIES:
        expected.update({f"{f}.{k}": s for k, s in
                         _encoder_shapes(config["autoencoders"][f]).items()})
        bottleneck = DIMS[f] // config["autoencoders"][f]["factor"]
        expected[f"{f}.centroids"] = (config["n_codes"], bottleneck)
    with _open(path) as z:
        names = set(z.files) - {"config"}
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        if missing or extra:
            raise BundleError(f"{path}: entries do not match the config: missing "
                              f"{missing or 'none'}, unexpected {extra or 'none'}")
        arrays = {name: _entry(path, z, name) for name in sorted(expected)}
    for name, shape in expected.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != np.float32:
            raise BundleError(f"{path}: {name} is {a.dtype} {a.shape}, expected float32 "
                              f"{shape} from the config")
        if not np.isfinite(a).all():
            raise BundleError(f"{path}: {name} holds non-finite values")
        if name.endswith(".std") and (a <= 0).any():
            raise BundleError(f"{path}: {name} holds non-positive standard deviations")
    return Bundle(path, config, arrays)


def bundle_fingerprint(path: str | Path) -> str | None:
    """The export fingerprint recorded in a bundle's config, or None (no or unreadable file)."""
    try:
        return read_config(path).get("meta", {}).get("fingerprint")
    except BundleError:
        return None
