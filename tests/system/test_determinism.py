"""Same seed, config and data on CPU: the same bytes, file by file, across two runs.

The whole chain runs twice into two artifacts folders (in one process, so nothing may depend on
the global random state a previous run left): train_autoencoders, fit_codebooks, embed,
pretrain_kwmlp, embed_kwmlp and train_heads. Every output file must be identical byte for byte,
except the two that record wall-clock times: ``autoencoders/timings.json`` (ignored) and the
codebooks' ``<family>.json`` statistics (FAISS's per-iteration ``time`` and ``time_search``,
compared without them); JSON files that name a file of their artifacts folder are compared
with that folder's path replaced. What cannot be identical (GPU runs, other CPUs) is in README.md.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from bow.bagofwords.tokens import FAMILIES
from bow.data.synth import make_default_dataset
from pipelines import (
    embed,
    embed_kwmlp,
    fit_codebooks,
    pretrain_kwmlp,
    train_autoencoders,
    train_heads,
)

pytestmark = pytest.mark.slow

TIMES = ("time", "time_search")


def _chain(data, art, checkpoint=None):
    common = ["--data", str(data), "--artifacts", str(art), "--device", "cpu"]
    train_autoencoders.main(common + ["--hidden", "32", "--batch-size", "32", "--epochs", "2",
                                      "--steps-per-epoch", "5", "--max-val-tokens", "1000"])
    fit_codebooks.main(common + ["--n-codes", "16", "--niter", "5"])
    embed.main(common + ["--shard-size", "8"])
    pretrain_kwmlp.main(common + ["--depth", "1", "--epochs", "2", "--warmup-epochs", "1",
                                  "--batch-size", "8", "--val-splits", "eval"])
    if checkpoint is None:      # both runs embed with the first run's KW-MLP, from one path
        checkpoint = art.parent / "kwmlp.pth"
        shutil.copyfile(art / "kwmlp" / "best.pth", checkpoint)
    embed_kwmlp.main(common + ["--checkpoint", str(checkpoint), "--shard-size", "8"])
    train_heads.main(["--artifacts", str(art), "--device", "cpu", "--features",
                      str(art / "stores" / "bow.h5"), "--width", "16", "--max-epochs", "2"])
    return checkpoint


def _files(art) -> dict[str, str]:
    """{relative path: sha256} of every output file (locks and timings left out)."""
    out = {}
    for path in sorted(art.rglob("*")):
        rel = str(path.relative_to(art))
        if not path.is_file() or path.name == ".lock" or rel == "autoencoders/timings.json":
            continue
        if path.parent.name == "codebooks" and path.suffix == ".json" and \
                path.stem in FAMILIES:          # per-iteration wall-clock times removed
            info = json.loads(path.read_text())
            for row in info["iterations"]:
                for key in TIMES:
                    row.pop(key)
            content = json.dumps(info, sort_keys=True).encode()
        elif path.suffix == ".json":            # may name files in its artifacts folder
            content = path.read_bytes().replace(str(art).encode(), b"<artifacts>")
        else:
            content = path.read_bytes()
        out[rel] = hashlib.sha256(content).hexdigest()
    return out


def test_two_runs_write_the_same_bytes(tmp_path, capsys):
    data = make_default_dataset(tmp_path / "data", n_dev=16, n_eval=4, max_seconds=2.0)
    checkpoint = _chain(data, tmp_path / "a")
    _chain(data, tmp_path / "b", checkpoint)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    expected = {f"autoencoders/{f}.pt" for f in FAMILIES} | {f"codebooks/{f}.npz" for f in
                                                              FAMILIES}
    expected |= {"stores/bow.h5", "stores/kwmlp.h5", "kwmlp/best.pth", "kwmlp/last.pt",
                 "autoencoders/history.json", "heads/bow/head.npz"}
    assert expected <= set(a), sorted(expected - set(a))
    assert sorted(a) == sorted(b)
    differ = sorted(name for name in a if a[name] != b[name])
    assert not differ, differ
    capsys.readouterr()
