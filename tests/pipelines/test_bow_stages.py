"""The bag-of-words stages end to end: train_autoencoders -> fit_codebooks -> embed.

Tiny settings (hidden width 32, a few steps, D = 16) so the whole file runs in well under a
minute on 2 CPU cores; the stages' logic does not depend on the sizes.
"""
import dataclasses
import json
import shutil

import numpy as np
import pytest

from bow.audio.load import chunk, read_audio
from bow.bagofwords.tokens import FAMILIES
from bow.data.datasets import load_dataset
from bow.io.stage import InputError, read_fingerprint
from bow.io.store import read, store_fingerprint
from pipelines import embed, fit_codebooks, train_autoencoders
from pipelines.embed import EmbedConfig
from pipelines.fit_codebooks import FitCodebooksConfig
from pipelines.train_autoencoders import TrainAutoencodersConfig
from tests.conftest import check_counts, linked_dataset

TRAIN = TrainAutoencodersConfig(hidden=32, batch_size=32, epochs=1, steps_per_epoch=3,
                                max_val_tokens=500)
CODES = FitCodebooksConfig(n_codes=16, niter=5)


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def mini_run(fsd50k_mini_dir, tmp_path_factory):
    """The three stages once on the FSD50K-layout mini set."""
    art = tmp_path_factory.mktemp("artifacts")
    ae = train_autoencoders.run(fsd50k_mini_dir, art, TRAIN, device="cpu", progress=False)
    cb = fit_codebooks.run(fsd50k_mini_dir, art, CODES, device="cpu", progress=False)
    store = embed.run(fsd50k_mini_dir, art, EmbedConfig(), device="cpu", progress=False)
    return art, ae, cb, store


@pytest.mark.slow
def test_end_to_end_on_fsd50k_layout(mini_run, fsd50k_mini_dir):
    art, ae, cb, store_path = mini_run
    assert ae == art / "autoencoders" and cb == art / "codebooks"
    assert store_path == art / "stores" / "bow.h5"
    dataset = load_dataset(fsd50k_mini_dir)
    s = read(store_path)
    assert len(s) + len(s.skipped) == len(dataset.clips) + len(dataset.invalid)
    assert len(s) == 400 and not s.skipped                 # one row per clip
    assert s.vocabulary == dataset.vocabulary
    assert list(s.fname) == [c.fname for c in dataset.clips]
    assert sorted(set(s.split)) == ["eval", "train", "val"]
    assert len(s.chunks) == s.offsets[-1] and s.chunks.dtype == np.float32   # soft assignment
    check_counts(s)
    for i in (0, 17, 399):                                 # rows align with bow.audio.load.chunk
        clip = dataset.clips[i]
        assert len(s.chunk_vectors(i)) == len(chunk(read_audio(clip.path)))
        np.testing.assert_allclose(s.clips[i], s.chunk_vectors(i).mean(0), rtol=1e-6)
        assert [dataset.vocabulary[j] for j in np.flatnonzero(s.labels[i])] == \
            sorted(clip.labels, key=dataset.vocabulary.index)
    assert s.attrs["kind"] == "bow" and s.attrs["config"]["n_codes"] == 16
    assert s.attrs["config"]["families"] == list(FAMILIES)
    assert s.attrs["upstream"] == {"autoencoders": read_fingerprint(ae),
                                   "codebooks": read_fingerprint(cb)}
    for family in FAMILIES:
        assert (ae / f"{family}.pt").is_file() and (cb / f"{family}.json").is_file()
    assert not list(ae.glob(".checkpoints-*"))             # removed once the stage is done
    # only training clips were fitted on
    train = [c for c in dataset.clips if c.split == "train"]
    history = json.loads((ae / "history.json").read_text())
    assert history["fit_clips"] + history["val_clips"] == len(train)


@pytest.mark.slow
def test_rerun_is_skipped_and_a_changed_option_is_redone(mini_run, fsd50k_mini_dir):
    art, ae, cb, store_path = mini_run
    before = (_mtimes(ae), _mtimes(cb), store_path.stat().st_mtime_ns)
    train_autoencoders.run(fsd50k_mini_dir, art, TRAIN, device="cpu", progress=False)
    fit_codebooks.run(fsd50k_mini_dir, art, CODES, device="cpu", progress=False)
    embed.run(fsd50k_mini_dir, art, EmbedConfig(), device="cpu", progress=False)
    assert (_mtimes(ae), _mtimes(cb), store_path.stat().st_mtime_ns) == before

    old_cb, old_store = read_fingerprint(cb), store_fingerprint(store_path)
    fit_codebooks.run(fsd50k_mini_dir, art, FitCodebooksConfig(n_codes=16, niter=6),
                      device="cpu", progress=False)
    assert read_fingerprint(cb) != old_cb
    assert (json.loads((cb / "config.json").read_text())["niter"]) == 6
    iterations = json.loads((cb / "patch.json").read_text())["iterations"]
    assert max(i["iteration"] for i in iterations) <= 5
    embed.run(fsd50k_mini_dir, art, EmbedConfig(), device="cpu", progress=False)
    assert store_fingerprint(store_path) != old_store    # upstream changed: redone
    assert read(store_path).attrs["upstream"]["codebooks"] == read_fingerprint(cb)


@pytest.fixture(scope="module")
def esc10_subset(esc10_dir, tmp_path_factory):
    """A labels.csv data set: 25 ESC-10 clips (folds 1-5) plus one corrupt file."""
    return linked_dataset(tmp_path_factory.mktemp("esc10_subset"),
                          load_dataset(esc10_dir).clips[::16], broken=("dog", "1", None))


@pytest.mark.slow
def test_command_lines_with_random_encoders_on_labels_csv_layout(esc10_subset, tmp_path, capsys):
    art = tmp_path / "art"
    toml = tmp_path / "train.toml"
    toml.write_text('hidden = 32\nsteps_per_epoch = 3\nbatch_size = 32\n'
                    'train_splits = ["1", "2", "3"]\n')
    common = ["--data", str(esc10_subset), "--artifacts", str(art), "--device", "cpu"]
    train_autoencoders.main(common + ["--config", str(toml), "--encoder", "random",
                                      "--tokens", "raw"])
    assert (art / "autoencoders-random" / "patch.pt").is_file()
    assert not (art / "autoencoders").exists()
    cfg = json.loads((art / "autoencoders-random" / "config.json").read_text())
    assert cfg["hidden"] == 32 and cfg["train_splits"] == ["1", "2", "3"]
    fit_codebooks.main(common + ["--encoder", "random", "--n-codes", "16",
                                 "--train-splits", "1,2,3", "--frame-codes", "0"])
    embed.main(common + ["--encoder", "random", "--assignment", "hard"])
    out = capsys.readouterr().out
    assert "1 unreadable" in out and "bow-random.h5: 25 clips" in out and "1 skipped" in out
    s = read(art / "stores" / "bow-random.h5")
    assert len(s) == 25 and s.skipped[0][0] == "broken.wav" and "broken.wav" in s.skipped[0][1]
    assert s.chunks.dtype == np.uint16 and s.chunks.shape[1] == 64            # the paper's
    assert (s.chunks.sum(1) == 143).all() and s.vocabulary == sorted(set(s.vocabulary))
    embed.main(common + ["--encoder", "random", "--assignment", "hard"])
    assert "up to date" in capsys.readouterr().out
    # downstream stages say what is missing
    shutil.rmtree(art / "codebooks-random")
    with pytest.raises(InputError, match="run python -m pipelines.fit_codebooks"):
        embed.run(esc10_subset, art, EmbedConfig(encoder="random", assignment="hard"),
                  progress=False)


def test_no_training_clips_is_a_clear_error(esc10_subset, tmp_path):
    with pytest.raises(InputError, match=r"no clips in the training split\(s\) \['train'\]"):
        train_autoencoders.run(esc10_subset, tmp_path, TRAIN, progress=False)


@pytest.mark.parametrize("module, config", [
    (train_autoencoders, TrainAutoencodersConfig), (fit_codebooks, FitCodebooksConfig),
    (embed, EmbedConfig)])
def test_help_lists_every_option_with_its_default(module, config, capsys):
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in ["--data", "--artifacts", "--device", "--config"]:
        assert name in text
    for f in dataclasses.fields(config):
        assert f"--{f.name.replace('_', '-')}" in text
    assert text.count("(default:") >= len(dataclasses.fields(config))


def test_bad_option_values_are_rejected(capsys):
    with pytest.raises(SystemExit):
        fit_codebooks.main(["--data", ".", "--n-codes", "1"])
    assert "n_codes must be an integer >= 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_autoencoders.main(["--data", ".", "--encoder", "pretrained"])
    assert "encoder must be one of" in capsys.readouterr().err


@pytest.fixture(scope="module")
def mini_subset(fsd50k_mini_dir, tmp_path_factory):
    """48 clips of the FSD50K-layout mini set, its own splits kept, as a labels.csv data set."""
    dataset = load_dataset(fsd50k_mini_dir)
    picked = [c for split in ("train", "val", "eval")
              for c in [c for c in dataset.clips if c.split == split][:16]]
    return linked_dataset(tmp_path_factory.mktemp("mini") / "data", picked)


ARMS = [  # every value of every arm setting at least once
    dict(encoder="trained", tokens="raw", assignment="hard", weighting="softmax", denoise=0.0),
    dict(encoder="trained", tokens="shape", assignment="soft", weighting="softmax", denoise=0.35),
    dict(encoder="random", tokens="shape", assignment="hard", weighting="uniform", denoise=0.0),
    dict(encoder="pca", tokens="raw", assignment="soft", weighting="rank", denoise=0.0),
]


@pytest.mark.slow
@pytest.mark.parametrize("arm", ARMS, ids=lambda a: "-".join(map(str, a.values())))
def test_each_arm_end_to_end_on_real_recordings(arm, mini_subset, tmp_path):
    """Issue 13: every arm through the three stages; the store records the arm that made it."""
    art = tmp_path / "artifacts"
    ae = train_autoencoders.run(mini_subset, art, dataclasses.replace(
        TRAIN, encoder=arm["encoder"], tokens=arm["tokens"], denoise=arm["denoise"]),
        device="cpu", progress=False)
    fit_codebooks.run(mini_subset, art, dataclasses.replace(CODES, encoder=arm["encoder"]),
                      device="cpu", progress=False)
    s = read(embed.run(mini_subset, art, EmbedConfig(
        encoder=arm["encoder"], assignment=arm["assignment"], neighbours=3,
        weighting=arm["weighting"]), device="cpu", progress=False))
    assert len(s) == 48 and not s.skipped
    assert s.chunks.dtype == (np.uint16 if arm["assignment"] == "hard" else np.float32)
    check_counts(s)
    config = s.attrs["config"]
    assert config["level_bins"] == (16 if arm["tokens"] == "shape" else 0)
    assert {k: config["embed"][k] for k in ("encoder", "assignment", "weighting")} == \
        {k: arm[k] for k in ("encoder", "assignment", "weighting")}
    trained = config["train_autoencoders"]
    assert (trained["encoder"], trained["tokens"], trained["denoise"]) == \
        (arm["encoder"], arm["tokens"], arm["denoise"])
    assert ae.name == f"autoencoders-{arm['encoder']}" or arm["encoder"] == "pca"
    if arm["assignment"] == "soft":   # fractional weights, not counts
        assert not np.array_equal(s.chunks, np.round(s.chunks))
