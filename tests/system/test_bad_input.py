"""Every stage that reads audio on the bad-input corpus (tests.corrupt), in both layouts.

Each case of ``make_bad_corpus`` is either embedded with exactly the chunk rows of
``bow.audio.load.chunk(read_audio(path))`` or skipped with a reason naming the problem, in the
store's /skipped table and in the printed summary; the command exits 0, and 3 with --strict
(the store is written all the same); no clip has partial rows. The training stages
(train_autoencoders, fit_codebooks, pretrain_kwmlp) skip the bad training clips and report
them. The labels.csv corpus holds the full 10-minute clip (read and embedded by embed and
embed_kwmlp); the FSD50K one a 3 s version, plus a row whose label is outside the vocabulary
(embed_opensmile runs on this one only).
Tiny models (hidden width 32, a few steps, D = 16) keep the file near half a minute.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from bow.audio.load import n_chunks, read_audio
from bow.data.datasets import load_dataset
from bow.io.store import read
from pipelines import (
    embed,
    embed_kwmlp,
    embed_opensmile,
    fit_codebooks,
    pretrain_kwmlp,
    train_autoencoders,
)
from pipelines.cli import SHOW_SKIPPED, STRICT_EXIT
from tests.conftest import check_counts
from tests.corrupt import make_bad_corpus

pytestmark = pytest.mark.slow

TRAIN = ["--hidden", "32", "--batch-size", "32", "--epochs", "1", "--steps-per-epoch", "3",
         "--max-val-tokens", "500"]
CODES = ["--n-codes", "16", "--niter", "5", "--nredo", "1"]


def _exit_code(main, argv) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


@pytest.fixture(scope="module", params=["labels_csv", "fsd50k"])
def corpus(request, tmp_path_factory):
    """(data root, expectations, artifacts folder) of one layout, with the bag-of-words models
    trained on it through the command lines (their summaries checked in the tests below)."""
    root = tmp_path_factory.mktemp(f"bad_{request.param}")
    long_seconds = 600.0 if request.param == "labels_csv" else 3.0
    expectations = make_bad_corpus(root / "data", layout=request.param,
                                   long_seconds=long_seconds)
    return root / "data", expectations, root / "artifacts"


@pytest.fixture(scope="module")
def lengths(corpus) -> dict[str, int]:
    """{fname: len(read_audio(path))} of the clips the corpus expects to be read."""
    data, expectations, _ = corpus
    return {c.fname: len(read_audio(c.path)) for c in load_dataset(data).clips
            if expectations[c.fname].outcome == "ok"}


def _common(corpus) -> list[str]:
    data, _, artifacts = corpus
    return ["--data", str(data), "--artifacts", str(artifacts), "--device", "cpu"]


def _skips(expectations) -> dict[str, str]:
    return {f: e.reason for f, e in expectations.items() if e.outcome == "skip"}


def _training_skips(data, expectations, splits=("train",)) -> set[str]:
    """Skip cases in the training splits, plus rows that are not clips at all."""
    ds = load_dataset(data)
    in_train = {c.fname for c in ds.clips if c.split in splits}
    return {f for f in _skips(expectations) if f in in_train} | {f for f, _ in ds.invalid}


def check_store(path, expectations, lengths) -> None:
    """Every ok case embedded with the chunk rows of bow.audio.load.chunk(read_audio(path)), every
    skip case in /skipped with its reason, nothing else, and no partial rows."""
    s = read(path)
    ok = {f: e for f, e in expectations.items() if e.outcome == "ok"}
    assert sorted(s.fname) == sorted(ok) == sorted(lengths), "ok cases and stored clips differ"
    skipped = dict(s.skipped)
    assert sorted(skipped) == sorted(_skips(expectations)), "skip cases and /skipped differ"
    for fname, reason in _skips(expectations).items():
        assert reason in skipped[fname] and skipped[fname].strip(), (fname, skipped[fname])
    assert s.offsets[0] == 0 and (np.diff(s.offsets) > 0).all()
    assert s.offsets[-1] == len(s.chunks) and np.isfinite(s.chunks).all()
    assert np.isfinite(s.clips).all() and len(s.clips) == len(s)
    for i, fname in enumerate(s.fname):
        assert np.diff(s.offsets)[i] == n_chunks(lengths[fname]), fname
    if s.attrs["kind"] == "bow":
        check_counts(s)                                 # whole histograms only
    if s.frames is not None:
        assert s.frame_offsets[-1] == len(s.frames) == len(s.timestamps)
        for i, fname in enumerate(s.fname):            # every clip's frames, 10 ms apart
            assert np.diff(s.frame_offsets)[i] == lengths[fname] // 160, fname


def check_summary(out: str, expectations, where: str) -> None:
    skips = _skips(expectations)
    assert f"{len(skips)} input(s) skipped (the full list: " in out and where in out
    listed = [line.split(":", 1)[0].strip() for line in out.splitlines()
              if line.startswith("  ") and line.split(":", 1)[0].strip() in skips]
    assert len(listed) == min(len(skips), SHOW_SKIPPED)
    if len(skips) > SHOW_SKIPPED:
        assert f"... and {len(skips) - SHOW_SKIPPED} more" in out
    for fname in listed:                                # each with its reason
        line = next(x for x in out.splitlines() if x.startswith(f"  {fname}: "))
        assert skips[fname] in line, line


def test_training_stages_skip_and_report_bad_training_clips(corpus, capsys):
    data, expectations, artifacts = corpus
    want = _training_skips(data, expectations)
    assert want, "the corpus puts bad files in the training split"
    code = _exit_code(train_autoencoders.main, _common(corpus) + TRAIN + ["--strict"])
    out = capsys.readouterr().out
    assert code == STRICT_EXIT and "train_autoencoders: " in out
    history = json.loads((artifacts / "autoencoders" / "history.json").read_text())
    reported = dict(history["skipped"] + history["invalid"])
    assert set(reported) == want
    for fname in want:
        assert _skips(expectations)[fname] in reported[fname]
    assert history["val_chunks"] > 0 and history["fit_chunks"] > 0
    # without --strict: the same report, exit status 0 (and the stage is up to date)
    assert _exit_code(train_autoencoders.main, _common(corpus) + TRAIN) == 0
    out = capsys.readouterr().out
    assert "up to date" in out and f"{len(want)} input(s) skipped" in out

    assert _exit_code(fit_codebooks.main, _common(corpus) + CODES) == 0
    out = capsys.readouterr().out
    summary = json.loads((artifacts / "codebooks" / "summary.json").read_text())
    assert {f for f, _ in summary["skipped"] + summary["invalid"]} == want
    assert f"fit_codebooks: {len(want)} input(s) skipped" in out


def test_embed_store_and_summary(corpus, lengths, capsys):
    data, expectations, artifacts = corpus
    path = artifacts / "stores" / "bow.h5"
    if not (artifacts / "codebooks" / "fingerprint.json").is_file():  # run alone
        assert _exit_code(train_autoencoders.main, _common(corpus) + TRAIN) == 0
        assert _exit_code(fit_codebooks.main, _common(corpus) + CODES) == 0
    capsys.readouterr()
    assert _exit_code(embed.main, _common(corpus) + ["--strict", "--shard-size", "8"]) \
        == STRICT_EXIT
    captured = capsys.readouterr()
    assert "--strict" in captured.err and "Traceback" not in captured.err
    check_store(path, expectations, lengths)  # --strict still writes the whole store
    check_summary(captured.out, expectations, str(path))
    assert _exit_code(embed.main, _common(corpus) + ["--shard-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "up to date" in out
    check_summary(out, expectations, str(path))
    assert not list(path.parent.glob(".bow.h5.shards-*"))  # no leftovers


def test_embed_kwmlp_store(corpus, lengths, kwmlp_dir, capsys):
    data, expectations, artifacts = corpus
    argv = _common(corpus) + ["--checkpoint", str(kwmlp_dir / "kwmlp.pth"), "--shard-size", "16"]
    assert _exit_code(embed_kwmlp.main, argv + ["--strict"]) == STRICT_EXIT
    path = artifacts / "stores" / "kwmlp.h5"
    check_store(path, expectations, lengths)
    check_summary(capsys.readouterr().out, expectations, str(path))
    assert _exit_code(embed_kwmlp.main, argv) == 0


def test_embed_opensmile_store(corpus, lengths, opensmile_package, capsys):
    """The openSMILE peer on every case: silence, one sample and 20 ms (padded to openSMILE's
    60 ms), a float file peaking at 2.0 (clipped for openSMILE) all give finite rows."""
    data, expectations, artifacts = corpus
    if "fsd50k" not in data.parent.name:
        pytest.skip("the labels.csv corpus holds a 10-minute clip (a minute of openSMILE); "
                    "the FSD50K one has every other case")
    argv = _common(corpus) + ["--shard-size", "16"]
    assert _exit_code(embed_opensmile.main, argv + ["--strict"]) == STRICT_EXIT
    path = artifacts / "stores" / "opensmile.h5"
    check_store(path, expectations, lengths)
    out = capsys.readouterr().out
    check_summary(out, expectations, str(path))
    assert "0 non-finite openSMILE value(s)" in out
    with h5py.File(path) as f:
        assert not f["clips/nonfinite"][()].any()
    assert _exit_code(embed_opensmile.main, argv) == 0


def test_pretrain_kwmlp_skips_bad_clips(corpus, capsys):
    data, expectations, artifacts = corpus
    argv = _common(corpus) + ["--depth", "1", "--epochs", "1", "--warmup-epochs", "0",
                              "--batch-size", "8", "--strict"]
    assert _exit_code(pretrain_kwmlp.main, argv) == STRICT_EXIT
    info = json.loads((artifacts / "kwmlp" / "best.json").read_text())
    reported = dict(info["skipped"])
    skips = _skips(expectations)       # every split is used: every skip case is reported
    assert set(reported) == set(skips)
    for fname, reason in skips.items():
        assert reason in reported[fname], (fname, reported[fname])
    assert "pretrain_kwmlp: " in capsys.readouterr().out
