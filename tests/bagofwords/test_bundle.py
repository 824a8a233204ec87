"""The single-file bag-of-words bundle: export from the stages' artifacts, round trip, bad files.

The stages run once on ten real ESC-10 clips with tiny settings (32 hidden units, D = 16); the
HEAR scene embedding from the exported bundle must equal the store's clip vector of each clip.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.hear_memory import random_bundle
from bow.audio.features import LogMel
from bow.audio.load import read_audio
from bow.bagofwords import bundle
from bow.bagofwords.model import BagOfWords, normalise
from bow.bagofwords.tokens import FAMILIES
from bow.data.datasets import load_dataset
from bow.hear import bow as hear_bow
from bow.io.stage import InputError
from bow.io.store import read as read_store
from pipelines import embed, export_bundle, fit_codebooks, layout, train_autoencoders
from pipelines.embed import EmbedConfig
from pipelines.export_bundle import ExportBundleConfig
from pipelines.fit_codebooks import FitCodebooksConfig
from pipelines.train_autoencoders import TrainAutoencodersConfig
from tests.conftest import linked_dataset, sine

TRAIN = TrainAutoencodersConfig(hidden=32, batch_size=32, epochs=1, steps_per_epoch=3,
                                max_val_tokens=500)
CODES = FitCodebooksConfig(n_codes=16, niter=5, nredo=1)


@pytest.fixture(scope="module")
def esc10_small(esc10_dir, tmp_path_factory):
    """A labels.csv data set of ten ESC-10 clips: eight train, two test."""
    return linked_dataset(tmp_path_factory.mktemp("esc10_small"),
                          load_dataset(esc10_dir).clips[::40],
                          split_of=lambda k, clip: "test" if k >= 8 else "train")


@pytest.fixture(scope="module")
def exported(esc10_small, tmp_path_factory):
    art = tmp_path_factory.mktemp("artifacts")
    train_autoencoders.run(esc10_small, art, TRAIN, device="cpu", progress=False)
    fit_codebooks.run(esc10_small, art, CODES, device="cpu", progress=False)
    store = embed.run(esc10_small, art, EmbedConfig(), device="cpu", progress=False)
    path = export_bundle.run(None, art, ExportBundleConfig(normalise="none"), device="cpu",
                             progress=False)
    return art, store, path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(path, bundle arrays) of an untrained bundle: 32 hidden units, D = 16."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.npz"
    random_bundle(str(path), hidden=32, n_codes=16, tokens="raw", assignment="hard",
                  normalise="none")
    with np.load(path) as z:
        return path, {k: z[k] for k in z.files}


@pytest.mark.slow
def test_exported_bundle_embeds_like_the_store(exported, esc10_small):
    art, store_path, path = exported
    assert path == art / "bundles" / "bow.npz"
    store = read_store(store_path)
    model = hear_bow.load_model(str(path))
    assert model.scene_embedding_size == store.clips.shape[1]
    dataset = load_dataset(esc10_small)
    assert list(store.fname) == [c.fname for c in dataset.clips]
    for i, clip in enumerate(dataset.clips):
        audio = torch.from_numpy(read_audio(clip.path))[None]
        scene = hear_bow.get_scene_embeddings(audio, model)[0].numpy()
        np.testing.assert_array_equal(scene, store.clips[i], err_msg=clip.fname)
        emb, ts = hear_bow.get_timestamp_embeddings(audio, model)
        chunks = store.chunk_vectors(i)                     # chunk j is the window at its middle
        centres = [int(np.searchsorted(ts[0].numpy(), 1000 * j + 500)) for j in range(len(chunks))]
        inside = [j for j, k in enumerate(centres) if k < ts.shape[1]]
        np.testing.assert_array_equal(emb[0, [centres[j] for j in inside]].numpy(), chunks[inside])
    config = bundle.read_config(path)
    assert config["meta"]["upstream"] == store.attrs["upstream"]
    assert config["meta"]["fit_codebooks"]["n_codes"] == 16 and config["normalise"] == "none"
    assert config["assignment"]["assignment"] == EmbedConfig().assignment


@pytest.mark.slow
def test_bundle_holds_the_artifacts_and_reexport_is_skipped(exported):
    art, _, path = exported
    bag = BagOfWords.load(art / "autoencoders", art / "codebooks")
    loaded = bundle.read(path).bag()
    assert loaded.assignment == bag.assignment and loaded.n_levels == bag.n_levels
    for f in FAMILIES:
        for (w, b), (lw, lb) in zip(bag.encoders[f].layers(), loaded.encoders[f].layers(),
                                    strict=True):
            assert torch.equal(lw, w) and torch.equal(lb, b)
        assert torch.equal(loaded.encoders[f].mean_, bag.encoders[f].mean_)
        assert torch.equal(loaded.encoders[f].std_, bag.encoders[f].std_)
        np.testing.assert_array_equal(loaded.codebooks[f].centroids_, bag.codebooks[f].centroids_)
        if bag.levels:
            np.testing.assert_array_equal(loaded.levels[f].edges_, bag.levels[f].edges_)
    before = path.stat().st_mtime_ns
    export_bundle.run(None, art, ExportBundleConfig(normalise="none"), progress=False)
    assert path.stat().st_mtime_ns == before
    old = bundle.bundle_fingerprint(path)
    export_bundle.run(None, art, ExportBundleConfig(), progress=False)   # the default: sqrt
    assert bundle.bundle_fingerprint(path) != old and bundle.read(path).normalise == "sqrt"
    audio = torch.from_numpy(sine(440, 2.5))[None]
    sqrt = hear_bow.get_scene_embeddings(audio, hear_bow.load_model(str(path)))
    export_bundle.run(None, art, ExportBundleConfig(normalise="none"), progress=False)
    raw = hear_bow.get_scene_embeddings(audio, hear_bow.load_model(str(path)))
    np.testing.assert_array_equal(sqrt.numpy(), normalise(raw.numpy(), "sqrt"))


@pytest.mark.slow
def test_command_line(exported, capsys, tmp_path):
    art, _, path = exported
    export_bundle.main(["--artifacts", str(art), "--normalise", "none"])
    out = capsys.readouterr().out
    assert "up to date" in out and "D = 16" in out and "hear-validator bow.hear.bow" in out
    with pytest.raises(InputError, match="run python -m pipelines.train_autoencoders"):
        export_bundle.run(None, tmp_path, ExportBundleConfig(encoder="random"), progress=False)
    assert layout.bundle(art, "random") == art / "bundles" / "bow-random.npz"
    with pytest.raises(SystemExit):
        export_bundle.main(["--artifacts", str(art), "--normalise", "cube"])


def test_round_trip_embeds_identically(tiny):
    path, _ = tiny
    b = bundle.read(path)
    bag = b.bag()
    assert b.n_codes == 16 and b.normalise == "none"
    assert all(not hasattr(bag.encoders[f], "decoder_") for f in FAMILIES)   # no decoders
    with torch.inference_mode():
        logmel = LogMel()(torch.from_numpy(np.stack([sine(300, 1.0), sine(3000, 1.0)])))
    again = bundle.read(path)
    copy = path.with_name("copy.npz")
    bundle.write(copy, bag)                       # write what was read: the same numbers
    np.testing.assert_array_equal(bundle.read(copy).bag().transform(logmel), bag.transform(logmel))
    for name, a in again.arrays.items():
        np.testing.assert_array_equal(bundle.read(copy).arrays[name], a)


def _rewrite(path, arrays, change: dict):
    """Write ``arrays`` changed: ``cfg_<key>`` sets a config key, None removes an entry."""
    out = dict(arrays)
    config = json.loads(str(arrays["config"]))
    for k, v in change.items():
        if k.startswith("cfg_"):
            config[k[4:]] = v
        elif v is None:
            out.pop(k)
        else:
            out[k] = v
    if "config" not in change:
        out["config"] = np.str_(json.dumps(config))
    with open(path, "wb") as fh:
        np.savez(fh, **out)
    return path


@pytest.mark.parametrize("change, message", [
    ({"config": None}, "no 'config' entry"),
    ({"config": np.str_("{not json")}, "not valid JSON"),
    ({"config": np.arange(3.0)}, "not a JSON string"),
    ({"cfg_format": "something-else"}, "not a bow bundle"),
    ({"cfg_format_version": 99}, "format version 99"),
    ({"cfg_n_codes": 32}, "codebook has 16 codes"),
    ({"cfg_normalise": "cube"}, "normalise 'cube'"),
    ({"patch.centroids": None}, r"missing \['patch.centroids'\]"),
    ({"extra.weights": np.zeros(3, np.float32)}, r"unexpected \['extra.weights'\]"),
    ({"thumbnail.centroids": np.zeros((8, 8), np.float32)}, r"thumbnail.centroids is float32 "
                                                           r"\(8, 8\), expected float32 \(16, 8\)"),
    ({"patch.mean": np.zeros(80, np.float64)}, "patch.mean is float64"),
    ({"patch.layer0.bias": np.full(32, np.nan, np.float32)}, "non-finite"),
    ({"band_envelope.std": np.zeros(800, np.float32)}, "non-positive"),
    ({"patch.std": np.array([{"a": 1}] * 80, dtype=object)}, "'patch.std' cannot be read"),
])
def test_malformed_bundles_are_clear_errors(tiny, tmp_path, change, message):
    path = _rewrite(tmp_path / "bad.npz", tiny[1], change)
    with pytest.raises(bundle.BundleError, match=message) as err:
        hear_bow.load_model(str(path))
    assert str(path) in str(err.value)
    assert err.value.__cause__ is None                    # no chained traceback from inside
    assert err.value.__suppress_context__ or err.value.__context__ is None


def test_files_that_are_not_bundles(tmp_path, tiny):
    (tmp_path / "text.npz").write_text("hello")
    np.save(tmp_path / "array.npy", np.zeros(3))
    cases = {tmp_path / "missing.npz": "no such file", tmp_path / "text.npz": "not a bow bundle",
             tmp_path / "array.npy": "single .npy array"}
    torch.save({"weights": torch.zeros(2)}, tmp_path / "model.pt")
    cases[tmp_path / "model.pt"] = "no 'config' entry"  # a torch zip is a zip, not a bundle
    for path, message in cases.items():
        with pytest.raises(bundle.BundleError, match=message):
            bundle.read(path)
    assert bundle.bundle_fingerprint(tmp_path / "missing.npz") is None


def test_write_is_atomic(tiny, tmp_path, monkeypatch):
    path, _ = tiny
    bag = bundle.read(path).bag()
    target = tmp_path / "out.npz"
    bundle.write(target, bag)
    before = target.read_bytes()

    def broken(fh, **arrays):
        fh.write(b"PK half an archive")
        raise OSError("disk full")
    monkeypatch.setattr(bundle.np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        bundle.write(target, bag, normalise="sqrt")
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == \
        ["out.npz"]
    with pytest.raises(ValueError, match="normalise"):
        bundle.write(target, bag, normalise="cube")


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        export_bundle.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--encoder" in out and "--normalise" in out and "(default: sqrt)" in out


def test_wrong_parameter_types_and_missing_statistics(tiny, tmp_path):
    encoders = json.loads(str(tiny[1]["config"]))["encoders"]
    encoders["patch"]["dropout"] = "x"
    path = _rewrite(tmp_path / "bad.npz", tiny[1], {"cfg_encoders": encoders})
    with pytest.raises(bundle.BundleError, match="patch encoder parameter dropout = 'x'"):
        hear_bow.load_model(str(path))
    # the k-means statistics are informational: a bundle without them still embeds
    path = _rewrite(tmp_path / "nostats.npz", tiny[1], {"cfg_stats": None})
    audio = torch.zeros(1, 16_000)
    assert hear_bow.get_scene_embeddings(audio, hear_bow.load_model(str(path))).shape[0] == 1


def test_version_1_bundles_still_read_and_embed_the_same(tiny, tmp_path):
    """A bundle written before format version 2 (the autoencoder's layers under
    ``f.encoder.{0,3,6}``, no tokens, levels or assignment in the config)."""
    path, arrays = tiny
    config = json.loads(str(arrays["config"]))
    old = {"config": None}
    for f in FAMILIES:
        for i, name in enumerate(("0", "3", "6")):
            for part in ("weight", "bias"):
                old[f"{f}.encoder.{name}.{part}"] = arrays[f"{f}.layer{i}.{part}"]
                old[f"{f}.layer{i}.{part}"] = None
    v1 = {**{k: v for k, v in config.items() if k not in ("encoders", "level_bins",
                                                           "assignment")},
          "format_version": 1, "autoencoders": {
              f: {k: v for k, v in p.items() if k not in ("kind", "tokens", "denoise")}
              for f, p in config["encoders"].items()},
          "codebooks": {f: {k: v for k, v in p.items() if k != "scale"}
                        for f, p in config["codebooks"].items()}}
    old["config"] = np.str_(json.dumps(v1))
    legacy = _rewrite(tmp_path / "v1.npz", arrays, old)
    with torch.inference_mode():
        logmel = LogMel()(torch.from_numpy(np.stack([sine(300, 1.0), sine(3000, 1.0)])))
    np.testing.assert_array_equal(bundle.read(legacy).bag().transform(logmel),
                                  bundle.read(path).bag().transform(logmel))
