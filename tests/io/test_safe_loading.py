"""Loading never unpickles arbitrary objects, and a bad file gets a clear error naming it.

Checked for every kind of file the project reads back: autoencoders (.pt), KW-MLP checkpoints
(.pth), codebooks (.npz + .json), heads (head.npz + head.json), feature stores (.h5), and
for the stages' command lines (one line on stderr, exit status 1, no traceback).
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from bow.bagofwords.autoencoder import Autoencoder
from bow.bagofwords.codebook import Codebook, CodebookConfig, CodebookError
from bow.bagofwords.encoder import AutoencoderConfig
from bow.bagofwords.model import load_encoder
from bow.heads.model import Head, HeadConfig
from bow.io.stage import ArtifactError, load_torch, read_json, save_torch
from bow.io.store import StoreError, read
from bow.kwmlp.model import KWMLP, CheckpointError, load_checkpoint, save_checkpoint
from pipelines import embed, embed_kwmlp, fit_codebooks

ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this runs os.mkdir(MARKER): what a malicious checkpoint could do."""
    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _malicious(path: Path, tmp_path: Path) -> Path:
    Payload.marker = str(tmp_path / "pwned")
    torch.save({"model_state_dict": Payload(), "format": "bow-autoencoder"}, path)
    return tmp_path / "pwned"


def _bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    """Variants of a good file: missing, empty, truncated, random bytes."""
    data = good.read_bytes()
    files = {"missing": tmp_path / f"missing{good.suffix}"}
    for name, content in (("empty", b""), ("truncated", data[: len(data) // 2]),
                          ("random", np.random.default_rng(0).bytes(4096))):
        files[name] = tmp_path / f"{name}{good.suffix}"
        files[name].write_bytes(content)
    return files


def test_every_load_in_the_code_refuses_pickles():
    """Every torch.load passes weights_only=True and every np.load allow_pickle=False."""
    problems = []
    for path in sorted([*ROOT.glob("bow/**/*.py"), *ROOT.glob("pipelines/*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and isinstance(node.func.value, ast.Name)):
                continue
            kw = {k.arg: k.value for k in node.keywords}
            module = node.func.value.id
            if module == "torch":
                ok = isinstance(kw.get("weights_only"), ast.Constant) and \
                    kw["weights_only"].value is True
            elif module in ("np", "numpy"):
                ok = isinstance(kw.get("allow_pickle"), ast.Constant) and \
                    kw["allow_pickle"].value is False
            else:
                continue
            if not ok:
                problems.append(f"{path.relative_to(ROOT)}:{node.lineno} {module}.load")
    assert not problems, problems


def test_torch_files_are_the_same_bytes_whatever_the_temporary_name(tmp_path):
    blob = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"epochs": [1, 2]}}
    save_torch(blob, tmp_path / "a.pt")
    save_torch(blob, tmp_path / "a.pt")   # rewritten: same bytes
    first = (tmp_path / "a.pt").read_bytes()
    save_torch(blob, tmp_path / "a.pt")
    assert (tmp_path / "a.pt").read_bytes() == first
    assert torch.equal(load_torch(tmp_path / "a.pt")["w"], blob["w"])


@pytest.fixture(scope="module")
def autoencoder_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ae") / "patch.pt"
    logmel = torch.randn(12, 96, 100, generator=torch.Generator().manual_seed(0))
    ae = Autoencoder("patch", AutoencoderConfig(hidden=16, epochs=0))
    ae.fit(logmel[:8], logmel[8:]).save(path)
    return path


def test_autoencoder_files(autoencoder_file, tmp_path):
    load_encoder(autoencoder_file)                     # the good file loads
    for kind, path in _bad_files(tmp_path, autoencoder_file).items():
        with pytest.raises(ArtifactError, match=rf"{path.name}: (no such file|not a readable)"):
            load_encoder(path)
    marker = _malicious(tmp_path / "evil.pt", tmp_path)
    with pytest.raises(ArtifactError, match="evil.pt: not a readable bow encoder"):
        load_encoder(tmp_path / "evil.pt")
    assert not marker.exists()                             # the payload never ran
    blob = torch.load(autoencoder_file, weights_only=True)
    blob["params"]["hidden"] = 32                          # weights of another shape
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(ArtifactError, match="mismatch.pt: damaged or mismatched"):
        load_encoder(tmp_path / "mismatch.pt")
    save_checkpoint(KWMLP(num_classes=3, depth=1), tmp_path / "kwmlp.pth")  # another family
    with pytest.raises(ArtifactError, match="kwmlp.pth: not a bow encoder"):
        load_encoder(tmp_path / "kwmlp.pth")


def test_kwmlp_checkpoints(autoencoder_file, tmp_path):
    good = tmp_path / "good.pth"
    save_checkpoint(KWMLP(num_classes=3, depth=2), good)
    assert load_checkpoint(good).depth == 2
    for kind, path in _bad_files(tmp_path, good).items():
        with pytest.raises(CheckpointError, match=path.name):
            load_checkpoint(path)
    marker = _malicious(tmp_path / "evil.pth", tmp_path)
    with pytest.raises(CheckpointError, match="evil.pth: not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="patch.pt: no 'model_state_dict'"):
        load_checkpoint(autoencoder_file)                  # an autoencoder is not a KW-MLP
    state = torch.load(good, weights_only=True)
    del state["model_state_dict"]["to_logits.2.bias"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="partial.pth: state dict does not fit"):
        load_checkpoint(tmp_path / "partial.pth")
    torch.save({"model_state_dict": {"layers.0.x": 1.0}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="odd.pth: state dict does not fit"):
        load_checkpoint(tmp_path / "odd.pth")


def test_codebook_files(tmp_path):
    codes = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    book = Codebook(CodebookConfig(n_codes=16, niter=3, nredo=1), gpu=False)
    book.fit(codes).save(tmp_path / "patch.npz")
    good = tmp_path / "patch.npz"
    assert Codebook.load(good).centroids_.shape == (16, 4)
    for kind, path in _bad_files(tmp_path, good).items():
        with pytest.raises(CodebookError, match=path.name):
            Codebook.load(path)
    with open(tmp_path / "pickled.npz", "wb") as f:       # an object array needs a pickle
        np.savez(f, centroids=np.array([Payload()], dtype=object))
    with pytest.raises(CodebookError, match="pickled.npz: not a readable codebook"):
        Codebook.load(tmp_path / "pickled.npz")
    with np.load(good) as z:                               # centroids of the wrong shape
        arrays = dict(z)
    arrays["centroids"] = arrays["centroids"][:5]
    with open(tmp_path / "short.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CodebookError, match="short.npz: damaged codebook"):
        Codebook.load(tmp_path / "short.npz")
    side = good.with_suffix(".json")
    side.write_text("{ truncated")
    with pytest.raises(CodebookError, match="patch.json: damaged codebook statistics"):
        Codebook.load(good)
    side.unlink()                                          # the sidecar is optional
    assert not hasattr(Codebook.load(good), "stats_")


def test_head_files(tmp_path):
    rng = np.random.default_rng(0)
    from bow.io.featureset import FeatureSet
    chunks = rng.integers(0, 5, size=(40, 8)).astype(np.float32)
    labels = np.eye(2, dtype=np.uint8)[rng.integers(0, 2, 20)]
    data = FeatureSet(chunks, np.arange(0, 41, 2, dtype=np.int64), labels,
                      np.array([f"c{i}" for i in range(20)], dtype=object),
                      np.array(["train"] * 20, dtype=object), ["a", "b"],
                      np.zeros(8, bool))
    head = Head(HeadConfig(width=8, max_epochs=1), "cpu").fit(data, data, progress=False)
    good = head.save(tmp_path / "good")
    assert Head.load(good).vocabulary_ == ["a", "b"]
    broken = tmp_path / "broken"
    broken.mkdir()
    with pytest.raises(ArtifactError, match="head.json: no such file"):
        Head.load(broken)
    (broken / "head.json").write_text((good / "head.json").read_text())
    for content in (b"", (good / "head.npz").read_bytes()[:100], b"\x00" * 64):
        (broken / "head.npz").write_bytes(content)
        with pytest.raises(ArtifactError, match="broken/head.npz: damaged head"):
            Head.load(broken)
    other = Head(HeadConfig(width=16, max_epochs=1), "cpu").fit(data, data, progress=False)
    (broken / "head.npz").write_bytes((other.save(tmp_path / "w16") / "head.npz").read_bytes())
    with pytest.raises(ArtifactError, match="does not match .*broken/head.json"):
        Head.load(broken)                                   # weights of another width
    (broken / "head.json").write_text("not json")
    with pytest.raises(ArtifactError, match="head.json: not a readable"):
        Head.load(broken)


def test_json_sidecars(tmp_path):
    with pytest.raises(ArtifactError, match="x.json: no such file"):
        read_json(tmp_path / "x.json", "stage config")
    (tmp_path / "x.json").write_text('{"a": ')
    with pytest.raises(ArtifactError, match="x.json: not a readable stage config"):
        read_json(tmp_path / "x.json", "stage config")


def test_damaged_stores(tmp_path):
    from bow.io.store import ClipFeatures, merge, write_shard
    item = ClipFeatures("a", "train", np.array([1], np.uint8), np.ones((2, 3), np.uint16),
                        np.ones(3, np.float32))
    write_shard(tmp_path / "s.h5", [item])
    merge([tmp_path / "s.h5"], tmp_path / "good.h5", vocabulary=["x"], kind="bow", config={},
          fingerprint="f", upstream={}, code_version="0")
    assert len(read(tmp_path / "good.h5")) == 1
    for kind, path in _bad_files(tmp_path, tmp_path / "good.h5").items():
        with pytest.raises(StoreError, match=path.name):
            read(path)
    with h5py.File(tmp_path / "good.h5", "a") as f:      # a store missing a dataset
        del f["chunks/offsets"]
    with pytest.raises(StoreError, match="good.h5: damaged or incomplete feature store"):
        read(tmp_path / "good.h5")


def _last_line(err: str) -> str:
    """The last line on stderr (progress bars come before it)."""
    return err.strip().splitlines()[-1]


def test_stages_report_bad_files_without_a_traceback(tmp_path, capsys, autoencoder_file):
    """A damaged model file under a stage: one line naming it, exit status 1."""
    from bow.data.synth import make_default_dataset
    data = make_default_dataset(tmp_path / "data", n_dev=6, n_eval=2, max_seconds=1.0)
    art = tmp_path / "art"
    ae_dir = art / "autoencoders"
    ae_dir.mkdir(parents=True)
    (ae_dir / "fingerprint.json").write_text('{"fingerprint": "x"}')
    (ae_dir / "patch.pt").write_bytes(autoencoder_file.read_bytes()[:500])   # truncated
    common = ["--data", str(data), "--artifacts", str(art), "--device", "cpu"]
    with pytest.raises(SystemExit) as exit_:
        fit_codebooks.main(common + ["--n-codes", "16"])
    err = _last_line(capsys.readouterr().err)
    assert exit_.value.code == 1
    assert err.startswith("fit_codebooks: error: ") and "patch.pt: not a readable" in err
    (tmp_path / "bad.pth").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(SystemExit) as exit_:
        embed_kwmlp.main(common + ["--checkpoint", str(tmp_path / "bad.pth")])
    err = _last_line(capsys.readouterr().err)
    assert exit_.value.code == 1 and err.startswith("embed_kwmlp: error: ") and "bad.pth" in err
    cb_dir = art / "codebooks"                     # a finished stage whose codebook is gone
    cb_dir.mkdir(exist_ok=True)
    (cb_dir / "fingerprint.json").write_text('{"fingerprint": "y"}')
    (cb_dir / "config.json").write_text("{}")
    (ae_dir / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_:
        embed.main(common)
    err = _last_line(capsys.readouterr().err)
    assert exit_.value.code == 1 and err.startswith("embed: error: ")
    assert "patch.npz: no such codebook file" in err
