"""pipelines.pretrain_audiomlp and pipelines.embed_audiomlp on small real data sets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bow.audiomlp.train
from bow.audio.load import n_chunks, read_audio
from bow.audiomlp.embed import AudioMLPEmbedder
from bow.audiomlp.model import load_checkpoint
from bow.audiomlp.train import RECIPES, PretrainConfig
from bow.config import ConfigError
from bow.data.datasets import load_dataset
from bow.io.stage import InputError
from bow.io.store import read
from pipelines import embed_audiomlp, pretrain_audiomlp, run_config
from tests.conftest import linked_dataset

# ~3 s on one thread: 48 ESC-10 clips (288 chunks, 30 held out), 1 + 1 blocks, 3 epochs
TINY = dict(max_clips=48, depth=1, decoder_depth=1, epochs=3, batch_size=16)


@pytest.fixture(scope="module")
def trained(esc10_dir, tmp_path_factory):
    """A short pretraining of the default recipe on ESC-10 (labels unused)."""
    art = tmp_path_factory.mktemp("audiomlp")
    config = pretrain_audiomlp.PretrainAudioMLPConfig(**TINY)
    best = pretrain_audiomlp.run(esc10_dir, art, config, "cpu", progress=False)
    return art, config, best


@pytest.fixture(scope="module")
def mixed(esc10_dir, fsdd_dir, tmp_path_factory):
    """Two small data sets for pooling: 4 ESC-10 clips (folds) + a broken file, 4 FSDD clips."""
    root = tmp_path_factory.mktemp("mixed")
    esc = linked_dataset(root / "esc", load_dataset(esc10_dir).clips[::100],
                         broken=("dog", "1", None))
    fsdd = linked_dataset(root / "fsdd", load_dataset(fsdd_dir).clips[::750])
    return esc, fsdd


def test_recipes_and_explicit_settings():
    ours, authors = PretrainConfig().resolved(), PretrainConfig(recipe="authors").resolved()
    assert (ours.input_scaling, ours.bottleneck_act, ours.time_masks) == ("logmel", "none", 0)
    assert (authors.input_scaling, authors.bottleneck_act, authors.output_act) == \
        ("power", "gelu", "tanh")
    assert (authors.time_masks, authors.time_mask_width, authors.freq_masks,
            authors.freq_mask_width, authors.decoder_depth) == (2, 25, 2, 7, 6)
    assert PretrainConfig(recipe="authors", time_masks=0).resolved().time_masks == 0
    assert set(RECIPES["ours"]) == set(RECIPES["authors"])
    for bad in ({"recipe": "mine"}, {"loss": "huber"}, {"input_scaling": "db"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            PretrainConfig(**bad)
    with pytest.raises(ConfigError, match=r"\[pretrain_audiomlp\]: \['train_splits'\] are set"):
        run_config.resolve_config("quick", {"pretrain_audiomlp": {"train_splits": ["1"]}})


def test_short_pretraining_beats_predicting_the_mean(trained):
    art, _, best = trained
    info = json.loads(best.with_suffix(".json").read_text())
    assert info["n_clips"] == {"train": 43, "val": 5} and info["n_chunks"]["val"] >= 5
    history = info["history"]
    assert len(history) == 3 and info["best_epoch"] == 3
    assert history[-1]["val_loss"] < 0.1 * history[-1]["val_mean"]      # measured: 0.035
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert (art / "audiomlp/curves.png").stat().st_size > 0
    encoder, scaling = load_checkpoint(best)                 # the loader of the authors' file
    assert scaling.kind == "logmel" and isinstance(encoder.bottleneck[1], torch.nn.Identity)
    saved = torch.load(best, weights_only=True)
    assert saved["config"]["recipe"] == "ours" and "decoder_state_dict" in saved


def test_resume_after_an_interruption_gives_the_same_weights(trained, esc10_dir, tmp_path,
                                                             monkeypatch):
    art, config, best = trained
    mtime = best.stat().st_mtime_ns
    assert pretrain_audiomlp.run(esc10_dir, art, config, "cpu", False) == best
    assert best.stat().st_mtime_ns == mtime                            # done: skipped
    real, calls = bow.audiomlp.train.evaluate, []

    def crash_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bow.audiomlp.train, "evaluate", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        pretrain_audiomlp.run(esc10_dir, tmp_path, config, "cpu", progress=False)
    monkeypatch.setattr(bow.audiomlp.train, "evaluate", real)
    assert torch.load(tmp_path / "audiomlp/last.pt", weights_only=True)["epoch"] == 1
    resumed = pretrain_audiomlp.run(esc10_dir, tmp_path, config, "cpu", progress=False)
    a = torch.load(art / "audiomlp/last.pt", weights_only=True)["model_state_dict"]
    b = torch.load(tmp_path / "audiomlp/last.pt", weights_only=True)["model_state_dict"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.read_bytes() == best.read_bytes()
    assert json.loads(resumed.with_suffix(".json").read_text())["history"] == \
        json.loads(best.with_suffix(".json").read_text())["history"]


def test_pooled_data_sets_and_skipped_clips(mixed, tmp_path, capsys):
    esc, fsdd = mixed
    pretrain_audiomlp.main(["--data", f"{esc},{fsdd}", "--artifacts", str(tmp_path),
                            "--device", "cpu", "--depth", "1", "--decoder-depth", "1",
                            "--epochs", "1", "--val-fraction", "0.25", "--recipe", "authors",
                            "--no-progress"])
    out = capsys.readouterr().out
    assert "best epoch 1 of 1" in out and "1 clips skipped" in out and "broken.wav" in out
    info = json.loads((tmp_path / "audiomlp/best.json").read_text())
    assert [d["layout"] for d in info["data"]] == ["labels_csv", "labels_csv"]
    assert info["n_clips"] == {"train": 7, "val": 2} and info["config"]["input_scaling"] == "power"
    assert load_checkpoint(tmp_path / "audiomlp/best.pth")[1].kind == "power"
    with pytest.raises(InputError, match="at least 2"):
        pretrain_audiomlp.run(fsdd, tmp_path / "b", pretrain_audiomlp.PretrainAudioMLPConfig(
            train_splits=("nosuchsplit",)), "cpu", False)


def test_embed_store_schema_rerun_and_bad_checkpoint(mixed, audiomlp_dir, tmp_path, capsys):
    esc, _ = mixed
    ckpt = audiomlp_dir / "audiomae.pth"
    with pytest.raises(InputError, match="pretrain_audiomlp"):
        embed_audiomlp.run(esc, tmp_path, embed_audiomlp.EmbedAudioMLPConfig())
    argv = ["--data", str(esc), "--artifacts", str(tmp_path), "--device", "cpu",
            "--batch-clips", "3", "--no-progress"]
    embed_audiomlp.main(argv + ["--checkpoint", str(ckpt)])
    assert "4 clips" in capsys.readouterr().out
    store = read(tmp_path / "stores/audiomlp.h5")
    assert store.attrs["kind"] == "audiomlp" and store.skipped[0][0] == "broken.wav"
    assert store.clips.shape == (4, 1584) and store.frames.shape[1] == 8
    embedder = AudioMLPEmbedder(*load_checkpoint(ckpt))
    for i, fname in enumerate(store.fname):
        audio = read_audio(esc / "audio" / fname)
        want = embedder.embed([audio])[0]
        a, b = store.frame_offsets[i], store.frame_offsets[i + 1]
        np.testing.assert_array_equal(store.timestamps[a:b], want.timestamps)
        np.testing.assert_array_equal(store.frames[a:b], want.frames)
        np.testing.assert_array_equal(store.clips[i], want.scene)
        rows = store.chunk_vectors(i)
        assert rows.shape == (n_chunks(len(audio)), 1584)
        np.testing.assert_array_equal(
            rows, embedder.chunk_vectors(want.frames, want.timestamps, len(audio)))
    embed_audiomlp.main(argv + ["--checkpoint", str(ckpt)])         # unchanged: skipped
    assert "up to date" in capsys.readouterr().out
    (tmp_path / "bad.pth").write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(SystemExit) as exit_:
        embed_audiomlp.main(argv + ["--checkpoint", str(tmp_path / "bad.pth")])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("embed_audiomlp: error: ") and "bad.pth" in err
