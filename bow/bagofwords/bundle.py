"""The bag-of-words model in one file: encoders, standardisation, codebooks, level bins, config.

A bundle is an ``.npz`` (numpy's zip of ``.npy`` arrays) read with ``allow_pickle=False``, so
loading one never runs pickled code. Entries, for each family f of
``bow.bagofwords.tokens.FAMILIES`` (format version 2):

    config               ()                  str      JSON, below
    f.mean, f.std        (dim,)              float32  token standardisation
    f.layer<i>.weight    (out, in)           float32  the encoder's affine layers, in order
    f.layer<i>.bias      (out,)              float32  (autoencoder: 3, ReLU between; PCA: 1)
    f.centroids          (D, dim / F)        float32  the family's k-means codebook
    f.level_edges        (L - 1,)            float64  level-bin edges (shape tokens only)

and, with frame words (bow.bagofwords.frames; format version 3):

    frames.mean, .std    (94,)               float32  frame-descriptor standardisation
    frames.<stream>      (D_frames, 47)      float32  each stream's codebook (static, delta)

and, with statistics words (format version 4):

    frames.stat_words    (332, S)            float32  each chunk statistic's words

config: ``format`` ("bow-bundle"), ``format_version``, ``families`` (order of the histograms),
``n_codes`` (D), ``level_bins`` (L, 0 without), ``normalise`` (count normalisation of the HEAR
outputs: none, sqrt, log1p), ``assignment`` (bow.bagofwords.model.AssignmentConfig),
``encoders`` (each family's kind, autoencoder or pca, and parameters, tokens included),
``codebooks`` (parameters and the distance ``scale`` soft assignment uses), ``frames`` (the frame
words' ``codebook`` parameters, ``scales`` and ``stat_bins``; null without frame words),
``stats`` (best epoch and validation MSE, k-means objective), ``code_version`` and ``meta``
(for bundles written by pipelines.export_bundle: the fingerprint, the upstream stages'
fingerprints and configs).
Version 1 bundles (autoencoders of raw tokens, hard assignment, ``f.encoder.{0,3,6}.*``),
version 2 (no frame words) and version 3 (no statistics words) still read.

Decision: the decoders are left out. Embedding needs only the encoders, and leaving the decoders
out halves the file: the paper's sizes (F = 10, 2048 hidden units) hold 21.1 M encoder weights,
about 85 MB. Entries are stored uncompressed, as float32, so weights load bit for bit and the
encoders fold them exactly as the stages do (the HEAR outputs equal the store's vectors).

``read`` checks everything against the config before anything is built (every entry present,
no others, shapes implied by the parameters, dtype, finite, positive std) and raises
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
from bow.audio.descriptors import DIM as FRAME_DIM
from bow.bagofwords.codebook import Codebook, CodebookConfig
from bow.bagofwords.encoder import AutoencoderConfig, TokenEncoder
from bow.bagofwords.frames import N_STATS, STREAMS, FrameWords
from bow.bagofwords.levels import LevelBins
from bow.bagofwords.model import NORMALISATIONS, AssignmentConfig, BagOfWords
from bow.bagofwords.tokens import DIMS, FAMILIES
from bow.config import choose
from bow.io.stage import atomic_path, to_jsonable

FORMAT = "bow-bundle"
FORMAT_VERSION = 4
READABLE = (1, 2, 3, 4)
V1_LAYERS = ("0", "3", "6")  # version 1: the Linear layers' indices in the encoder's Sequential


class BundleError(ValueError):
    """A file that is not a usable bag-of-words bundle; the message names it and the problem."""


class BundledEncoder(TokenEncoder):
    """An encoder rebuilt from a bundle: its standardisation and affine layers only."""

    kind, format = "bundled", ""

    def __init__(self, family, config, device, layers, mean, std):
        super().__init__(family, config, device)
        self._layers = [(w.to(device), b.to(device)) for w, b in layers]
        self.mean_, self.std_ = mean.to(device), std.to(device)

    def layers(self):
        return self._layers


def _sizes(params: dict, kind: str) -> list[int]:
    """Encoder parameters -> the sizes of its layers, input first."""
    dim = DIMS[params["family"]]
    bottleneck = dim // int(params["factor"])
    return [dim, bottleneck] if kind == "pca" else \
        [dim, int(params["hidden"]), int(params["hidden"]), bottleneck]


def write(path: str | Path, bag: BagOfWords, normalise: str = "sqrt",
          meta: dict | None = None) -> None:
    """Write the encoders, codebooks and level bins of ``bag`` (and the config) to ``path``
    atomically; ``normalise``: the count normalisation of the HEAR outputs."""
    choose("normalise", normalise, NORMALISATIONS)
    arrays, stats, encoders, codebooks = {}, {}, {}, {}
    for f in FAMILIES:
        enc, cb = bag.encoders[f], bag.codebooks[f]
        arrays[f"{f}.mean"] = enc.mean_.detach().cpu().float().numpy()
        arrays[f"{f}.std"] = enc.std_.detach().cpu().float().numpy()
        for i, (w, b) in enumerate(enc.layers()):
            arrays[f"{f}.layer{i}.weight"] = w.detach().cpu().float().numpy()
            arrays[f"{f}.layer{i}.bias"] = b.detach().cpu().float().numpy()
        arrays[f"{f}.centroids"] = np.ascontiguousarray(cb.centroids_, dtype=np.float32)
        if bag.levels:
            arrays[f"{f}.level_edges"] = np.asarray(bag.levels[f].edges_, np.float64)
        history, best = getattr(enc, "history_", None), getattr(enc, "best_epoch_", None)
        stats[f] = {"best_epoch": best,
                    "val_mse": history[best]["val_mse"] if history and best is not None else None,
                    "kmeans_objective": getattr(cb, "objective_", None)}
        encoders[f] = {"kind": "pca" if len(enc.layers()) == 1 else "autoencoder",
                       **enc.get_params()}
        codebooks[f] = {**cb.get_params(), "scale": cb.scale_}
    frames = None
    if bag.frames:
        arrays.update({f"frames.{k}": v for k, v in bag.frames.arrays().items()})
        frames = bag.frames.params()
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "families": list(FAMILIES),
              "n_codes": bag.n_codes, "level_bins": bag.n_levels, "normalise": normalise,
              "assignment": bag.assignment, "encoders": encoders, "codebooks": codebooks,
              "frames": frames, "stats": stats, "code_version": __version__, "meta": meta or {}}
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


def _upgrade(config: dict) -> dict:
    """A version 1 config in version 2 terms (raw tokens, hard assignment, autoencoders)."""
    config = dict(config)
    config["encoders"] = {f: {"kind": "autoencoder", "tokens": "raw", **p}
                          for f, p in (config.pop("autoencoders", None) or {}).items()}
    config.setdefault("level_bins", 0)
    config.setdefault("assignment", {"assignment": "hard"})
    return config


def read_config(path: str | Path) -> dict:
    """The config of a bundle (reads only that entry), in version 2 terms; BundleError if it is
    not a bundle."""
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
    if config.get("format_version") not in READABLE:
        raise BundleError(f"{path}: bundle format version {config.get('format_version')!r}; "
                          f"this code reads versions {READABLE}")
    return _upgrade(config) if config["format_version"] == 1 else config


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
    for key, low in (("n_codes", 2), ("level_bins", 0)):
        if not isinstance(config.get(key), int) or config[key] < low:
            raise BundleError(f"{path}: {key} {config.get(key)!r} is not an integer >= {low}")
    try:
        AssignmentConfig(**config.get("assignment", {}))
    except (TypeError, ValueError) as e:
        raise BundleError(f"{path}: assignment {config.get('assignment')!r}: {e}") from None
    cb_defaults = {**CodebookConfig().__dict__}
    frames = config.get("frames")
    if frames is not None:
        try:
            n = CodebookConfig(**frames["codebook"]).n_codes
            scales = [frames["scales"][s] for s in STREAMS]
            stat_bins = frames.get("stat_bins", 0)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise BundleError(f"{path}: frame words {frames!r}: {e}") from None
        if n < 2 or not all(isinstance(v, float) for v in scales):
            raise BundleError(f"{path}: frame words of {n} codes, or without their scales")
        if not isinstance(stat_bins, int) or stat_bins < 0 or stat_bins == 1:
            raise BundleError(f"{path}: stat_bins {stat_bins!r} is not 0 or an integer >= 2")
    for f in FAMILIES:
        enc = dict(config.get("encoders", {}).get(f) or {})
        cb = dict(config.get("codebooks", {}).get(f) or {})
        if not enc or not cb:
            raise BundleError(f"{path}: the config has no encoder or codebook for {f}")
        kind, scale = enc.pop("kind", None), cb.pop("scale", None)
        ae_defaults = {"family": f, **AutoencoderConfig().__dict__}
        if kind not in ("autoencoder", "pca") or set(enc) - set(ae_defaults) \
                or set(cb) != set(cb_defaults) or "family" not in enc:
            raise BundleError(f"{path}: the {f} parameters {sorted(enc)} / {sorted(cb)} are not "
                              f"those of this code's encoders / Codebook")
        _check_types(path, f"the {f} encoder", enc, {k: ae_defaults[k] for k in enc})
        _check_types(path, f"the {f} codebook", cb, cb_defaults)
        if enc.get("family") != f:
            raise BundleError(f"{path}: the {f} encoder is configured for family "
                              f"{enc.get('family')!r}")
        if not (enc.get("factor", 0) > 0 and DIMS[f] % enc["factor"] == 0
                and (kind == "pca" or enc.get("hidden", 0) > 0)):
            raise BundleError(f"{path}: {f} encoder has an impossible shape (factor "
                              f"{enc.get('factor')!r}, hidden {enc.get('hidden')!r})")
        if cb.get("n_codes") != config["n_codes"]:
            raise BundleError(f"{path}: the {f} codebook has {cb.get('n_codes')} codes, the "
                              f"config says n_codes = {config['n_codes']}")
        if config["assignment"].get("assignment") == "soft" and not isinstance(scale, float):
            raise BundleError(f"{path}: soft assignment without the {f} codebook's scale")


def _expected(config: dict) -> dict[str, tuple[tuple[int, ...], type]]:
    """Entry name -> (shape, dtype) implied by a (checked) config."""
    out = {}
    for f in FAMILIES:
        enc = config["encoders"][f]
        sizes = _sizes(enc, enc["kind"])
        out[f"{f}.mean"] = out[f"{f}.std"] = ((sizes[0],), np.float32)
        names = [f"encoder.{i}" for i in V1_LAYERS] if config["format_version"] == 1 else \
            [f"layer{i}" for i in range(len(sizes) - 1)]
        for name, (a, b) in zip(names, zip(sizes[:-1], sizes[1:])):
            out[f"{f}.{name}.weight"] = ((b, a), np.float32)
            out[f"{f}.{name}.bias"] = ((b,), np.float32)
        out[f"{f}.centroids"] = ((config["n_codes"], sizes[-1]), np.float32)
        if config["level_bins"]:
            out[f"{f}.level_edges"] = ((config["level_bins"] - 1,), np.float64)
    if config.get("frames"):
        out["frames.mean"] = out["frames.std"] = ((FRAME_DIM,), np.float32)
        for s, cols in STREAMS.items():
            out[f"frames.{s}"] = ((config["frames"]["codebook"]["n_codes"],
                                   cols.stop - cols.start), np.float32)
        if config["frames"].get("stat_bins", 0):
            out["frames.stat_words"] = ((N_STATS, config["frames"]["stat_bins"]), np.float32)
    return out


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
    def width(self) -> int:
        """Length of the embeddings: 4 (D + L) + frame words and statistics words."""
        frames = self.config.get("frames")
        return len(FAMILIES) * (self.n_codes + int(self.config["level_bins"])) + \
            (len(STREAMS) * int(frames["codebook"]["n_codes"]) +
             N_STATS * int(frames.get("stat_bins", 0)) if frames else 0)

    @property
    def normalise(self) -> str:
        return self.config["normalise"]

    def _encoder(self, family: str, device) -> BundledEncoder:
        params = {k: v for k, v in self.config["encoders"][family].items() if k != "kind"}
        names = [f"encoder.{i}" for i in V1_LAYERS] if self.config["format_version"] == 1 \
            else sorted({k.rsplit(".", 1)[0].split(".", 1)[1] for k in self.arrays
                         if k.startswith(f"{family}.layer")})
        layers = [(torch.from_numpy(self.arrays[f"{family}.{n}.weight"]),
                   torch.from_numpy(self.arrays[f"{family}.{n}.bias"])) for n in names]
        return BundledEncoder(family, AutoencoderConfig(**{k: v for k, v in params.items()
                                                           if k != "family"}),
                              device, layers, torch.from_numpy(self.arrays[f"{family}.mean"]),
                              torch.from_numpy(self.arrays[f"{family}.std"]))

    def _codebook(self, family: str) -> Codebook:
        params = dict(self.config["codebooks"][family])
        scale = params.pop("scale", None)
        cb = Codebook(CodebookConfig(**params))
        cb.centroids_, cb.scale_ = self.arrays[f"{family}.centroids"], scale
        stats = (self.config.get("stats") or {}).get(family) or {}  # informational only
        cb.objective_ = stats.get("kmeans_objective", float("nan"))
        return cb

    def _levels(self, family: str) -> LevelBins:
        bins = LevelBins(family, int(self.config["level_bins"]))
        bins.edges_ = self.arrays[f"{family}.level_edges"]
        return bins

    def bag(self, device: str | torch.device = "cpu") -> BagOfWords:
        """The model as a bow.bagofwords.model.BagOfWords, its encoders on ``device``."""
        levels = {f: self._levels(f) for f in FAMILIES} if self.config["level_bins"] else None
        frames = self.config.get("frames")
        if frames:
            frames = FrameWords.from_arrays(
                frames, {k.split(".", 1)[1]: v for k, v in self.arrays.items()
                         if k.startswith("frames.")}, str(self.path))
        return BagOfWords({f: self._encoder(f, device) for f in FAMILIES},
                          {f: self._codebook(f) for f in FAMILIES}, levels,
                          AssignmentConfig(**self.config["assignment"]), frames)


def read(path: str | Path) -> Bundle:
    """Read and validate a bundle written by ``write``; BundleError names the first problem."""
    path = Path(path)
    config = read_config(path)
    _check_config(path, config)
    expected = _expected(config)
    with _open(path) as z:
        names = set(z.files) - {"config"}
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        if missing or extra:
            raise BundleError(f"{path}: entries do not match the config: missing "
                              f"{missing or 'none'}, unexpected {extra or 'none'}")
        arrays = {name: _entry(path, z, name) for name in sorted(expected)}
    for name, (shape, dtype) in expected.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != dtype:
            raise BundleError(f"{path}: {name} is {a.dtype} {a.shape}, expected "
                              f"{np.dtype(dtype)} {shape} from the config")
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
