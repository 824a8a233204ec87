"""pipelines.pretrain_kwmlp and pipelines.embed_kwmlp on small real data sets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import bow.kwmlp.train
from bow.audio.load import n_chunks, read_audio
from bow.data.datasets import load_dataset
from bow.io.stage import InputError
from bow.io.store import read
from bow.kwmlp.embed import KWMLPEmbedder
from bow.kwmlp.model import load_checkpoint
from pipelines import embed_kwmlp, pretrain_kwmlp

TINY = dict(depth=2, epochs=2, warmup_epochs=1, batch_size=8)


@pytest.fixture(scope="module")
def speech_commands(fsdd_dir, tmp_path_factory):
    """Speech Commands layout: 3 word folders of fsdd recordings as WAV, 8 clips per word."""
    root = tmp_path_factory.mktemp("speech_commands")
    val, test = [], []
    for digit, word in (("0", "zero"), ("1", "one"), ("2", "two")):
        (root / word).mkdir()
        for i, take in enumerate(range(5, 13)):
            src = fsdd_dir / "audio" / f"{digit}_jackson_{take}.flac"
            name = f"{word}/{digit}_jackson_{take}.wav"
            sf.write(root / name, read_audio(src), 16000)
            (val if i == 6 else test if i == 7 else []).append(name)
    (root / "_background_noise_").mkdir()
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test + ["one/missing.wav"]) + "\n")
    return root


@pytest.fixture(scope="module")
def small_labels_csv(esc10_dir, fsdd_dir, tmp_path_factory):
    """labels.csv layout: 3 fsdd + 2 esc10 clips of 0.3-5 s, and one unreadable file."""
    root = tmp_path_factory.mktemp("labels_csv")
    (root / "audio").mkdir()
    rows = ["fname,labels,split"]
    for src, label, split in ((fsdd_dir / "audio/0_nicolas_48.flac", "digit", "train"),
                              (fsdd_dir / "audio/9_theo_23.flac", "digit", "val"),
                              (fsdd_dir / "audio/1_yweweler_24.flac", "digit", "test"),
                              (esc10_dir / "audio/2-72970-A-10.flac", "rain", "train"),
                              (esc10_dir / "audio/5-219342-A-38.flac", "rain", "test")):
        (root / "audio" / src.name).symlink_to(src)
        rows.append(f"{src.name},{label},{split}")
    (root / "audio/broken.wav").write_bytes(b"RIFF not really a wave file")
    rows.append("broken.wav,rain,train")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_speech_commands_layout(speech_commands):
    ds = load_dataset(speech_commands)
    assert ds.layout == "speech_commands" and ds.vocabulary == ["one", "two", "zero"]
    assert len(ds.clips) == 24 and ds.clips[0].fname == "one/1_jackson_10.wav"
    assert {s: sum(c.split == s for c in ds.clips) for s in ds.splits} == \
        {"test": 3, "train": 18, "val": 3}
    assert all(c.labels == (c.fname.split("/")[0],) for c in ds.clips)
    assert ds.invalid == [("one/missing.wav", "listed in validation_list.txt / "
                                              "testing_list.txt but not found")]


@pytest.mark.slow
def test_pretrain_writes_authors_format_and_resumes(speech_commands, tmp_path, monkeypatch):
    config = pretrain_kwmlp.PretrainKWMLPConfig(**TINY)
    best = pretrain_kwmlp.run(speech_commands, tmp_path / "a", config, "cpu", progress=False)
    saved = torch.load(best, weights_only=True)
    assert list(saved) == ["model_state_dict"]
    model = load_checkpoint(best)
    assert model.depth == 2 and model.to_logits[2].out_features == 3
    info = json.loads(best.with_suffix(".json").read_text())
    assert info["classes"] == ["one", "two", "zero"] and len(info["history"]) == 2
    assert info["n_clips"] == {"train": 18, "val": 3, "test": 3}
    assert 0 <= info["test_accuracy"] <= 1 and 1 <= info["best_epoch"] <= 2
    assert (tmp_path / "a/kwmlp/curves.png").stat().st_size > 0
    mtime = best.stat().st_mtime_ns
    assert pretrain_kwmlp.run(speech_commands, tmp_path / "a", config, "cpu", False) == best
    assert best.stat().st_mtime_ns == mtime                     # done: skipped

    # interrupted after epoch 1, then resumed: the same weights as the uninterrupted run
    real_score, calls = bow.kwmlp.train.score, []

    def crash_on_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_score(*args, **kwargs)

    monkeypatch.setattr(bow.kwmlp.train, "score", crash_on_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        pretrain_kwmlp.run(speech_commands, tmp_path / "b", config, "cpu", progress=False)
    monkeypatch.setattr(bow.kwmlp.train, "score", real_score)
    assert torch.load(tmp_path / "b/kwmlp/last.pt", weights_only=True)["epoch"] == 1
    resumed = pretrain_kwmlp.run(speech_commands, tmp_path / "b", config, "cpu", False)
    a = torch.load(tmp_path / "a/kwmlp/last.pt", weights_only=True)["model_state_dict"]
    b = torch.load(tmp_path / "b/kwmlp/last.pt", weights_only=True)["model_state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(resumed.with_suffix(".json").read_text())["history"] == info["history"]


def test_pretrain_cli_on_labels_csv(small_labels_csv, tmp_path, capsys):
    pretrain_kwmlp.main(["--data", str(small_labels_csv), "--artifacts", str(tmp_path),
                         "--device", "cpu", "--depth", "1", "--epochs", "1",
                         "--warmup-epochs", "0", "--batch-size", "4"])
    out = capsys.readouterr().out
    assert "best epoch 1" in out and "1 clips skipped" in out
    info = json.loads((tmp_path / "kwmlp/best.json").read_text())
    assert info["classes"] == ["digit", "rain"] and info["skipped"][0][0] == "broken.wav"


def test_embed_kwmlp_store(small_labels_csv, kwmlp_dir, tmp_path, capsys):
    ckpt = kwmlp_dir / "kwmlp.pth"
    with pytest.raises(InputError, match="pretrain_kwmlp"):
        embed_kwmlp.run(small_labels_csv, tmp_path, embed_kwmlp.EmbedKWMLPConfig())
    embed_kwmlp.main(["--data", str(small_labels_csv), "--artifacts", str(tmp_path),
                      "--device", "cpu", "--checkpoint", str(ckpt), "--batch-clips", "2"])
    assert "5 clips" in capsys.readouterr().out
    store = read(tmp_path / "stores/kwmlp.h5")
    assert store.attrs["kind"] == "kwmlp" and store.skipped[0][0] == "broken.wav"
    embedder = KWMLPEmbedder(load_checkpoint(ckpt))
    for i, fname in enumerate(store.fname):
        audio = read_audio(small_labels_csv / "audio" / fname)
        want = embedder.embed([audio])[0]
        frames = store.frames[store.frame_offsets[i]:store.frame_offsets[i + 1]]
        stamps = store.timestamps[store.frame_offsets[i]:store.frame_offsets[i + 1]]
        np.testing.assert_array_equal(stamps, want.timestamps)
        np.testing.assert_allclose(frames, want.frames, atol=1e-5)
        np.testing.assert_allclose(store.clips[i], want.scene, atol=1e-5)
        rows = store.chunk_vectors(i)
        assert rows.shape == (n_chunks(len(audio)), 1024)
        np.testing.assert_allclose(
            rows, embedder.chunk_vectors(want.frames, want.timestamps, len(audio)), atol=1e-5)
    # same config, checkpoint and clips: skipped; another scene algorithm: recomputed
    embed_kwmlp.main(["--data", str(small_labels_csv), "--artifacts", str(tmp_path),
                      "--device", "cpu", "--checkpoint", str(ckpt), "--batch-clips", "2"])
    assert "up to date" in capsys.readouterr().out
    config = embed_kwmlp.EmbedKWMLPConfig(checkpoint=str(ckpt), scene_algorithm="mean",
                                          blocks=4)
    path = embed_kwmlp.run(small_labels_csv, tmp_path, config, "cpu", progress=False)
    again = read(path)
    assert again.attrs["fingerprint"] != store.attrs["fingerprint"]
    assert again.clips.shape == store.clips.shape and not np.allclose(again.clips, store.clips)
    with pytest.raises(ValueError, match="scene_algorithm"):
        embed_kwmlp.EmbedKWMLPConfig(scene_algorithm="median")
