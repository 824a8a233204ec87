"""KW-MLP: the authors' checkpoint and golden embeddings, batching, training, stochastic depth."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bow.audio.load import n_chunks
from bow.hear import kwmlp as hear_kwmlp
from bow.kwmlp.embed import KWMLPEmbedder, n_timestamps
from bow.kwmlp.model import KWMLP, CheckpointError, load_checkpoint, save_checkpoint
from bow.kwmlp.train import PretrainConfig, spec_augment, train_step
from bow.runtime import generator
from tests.conftest import sine


@pytest.fixture(scope="module")
def golden(kwmlp_dir):
    z = np.load(kwmlp_dir / "golden_public.npz")
    return [{k: z[f"c{i:02d}_{k}"] for k in ("audio", "timestamp_embeddings", "timestamps",
                                               "scene_embedding")} | {"name": str(name)}
            for i, name in enumerate(z["names"])]


@pytest.fixture(scope="module")
def authors_model(kwmlp_dir):
    return load_checkpoint(kwmlp_dir / "kwmlp.pth")


def test_checkpoint_loads_strictly(kwmlp_dir):
    state = torch.load(kwmlp_dir / "kwmlp.pth", weights_only=True)["model_state_dict"]
    model = KWMLP()                                   # the defaults are the authors' model
    assert set(model.state_dict()) == set(state)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in model.parameters()) == 424_811
    with pytest.raises(RuntimeError):
        KWMLP(depth=10).load_state_dict(state, strict=True)


def test_checkpoint_round_trip_and_bad_files(tmp_path, authors_model):
    path = tmp_path / "copy.pth"
    save_checkpoint(authors_model, path)
    saved = torch.load(path, weights_only=True)
    assert list(saved) == ["model_state_dict"]
    again = load_checkpoint(path)
    x = torch.randn(2, 40, 98)
    torch.testing.assert_close(again(x), authors_model(x), rtol=0, atol=0)
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_checkpoint(tmp_path / "junk.pth")
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="model_state_dict"):
        load_checkpoint(tmp_path / "other.pth")


def test_golden_reproduction_all_clips(golden, authors_model):
    """Every clip of golden_public.npz: timestamps exactly, embeddings within 1e-3 x max|ref|."""
    embedder = KWMLPEmbedder(authors_model)
    for ref in golden:
        ours = embedder.embed([ref["audio"]])[0]
        assert ours.timestamps.dtype == np.float32
        np.testing.assert_array_equal(ours.timestamps, ref["timestamps"], err_msg=ref["name"])
        for got, want in ((ours.frames, ref["timestamp_embeddings"]),
                          (ours.scene, ref["scene_embedding"])):
            assert got.shape == want.shape, ref["name"]
            err = np.abs(got - want).max() / np.abs(want).max()
            assert err <= 1e-3, f"{ref['name']}: relative error {err:.2e}"


def test_batch_of_different_clips_equals_one_by_one(golden, authors_model):
    embedder = KWMLPEmbedder(authors_model, batch_chunks=7)
    clips = [golden[i]["audio"] for i in (14, 0, 8, 5, 15)]          # 0.44 s ... 5 s
    batched = embedder.embed(clips)
    for clip, b in zip(clips, batched):
        one = embedder.embed([clip])[0]
        np.testing.assert_array_equal(b.timestamps, one.timestamps)
        np.testing.assert_allclose(b.frames, one.frames, rtol=0, atol=1e-5)
        np.testing.assert_allclose(b.scene, one.scene, rtol=0, atol=1e-5)


def test_hear_api_shapes_and_timestamps(authors_model):
    audio = torch.from_numpy(np.stack([sine(440, 1.5), sine(880, 1.5)]))
    model = hear_kwmlp.KWMLPModel(authors_model)
    emb, ts = hear_kwmlp.get_timestamp_embeddings(audio, model)
    assert emb.shape == (2, 150, 64) and ts.shape == (2, 150)
    assert ts[0, 0] == 10 and ts[0, -1] == 1500
    assert hear_kwmlp.get_scene_embeddings(audio, model).shape == (2, 1024)
    assert [n_timestamps(n) for n in (0, 159, 160, 4882, 64000, 80016)] == [0, 0, 1, 30, 400, 500]


@pytest.mark.parametrize("seconds", [0.005, 0.05, 0.5, 1.0, 2.05, 4.5, 5.001])
def test_chunk_vectors_align_with_audio_chunks(authors_model, seconds):
    embedder = KWMLPEmbedder(authors_model)
    audio = sine(300, seconds)
    clip = embedder.embed([audio])[0]
    rows = embedder.chunk_vectors(clip.frames, clip.timestamps, len(audio))
    assert rows.shape == (n_chunks(len(audio)), 1024)
    if len(clip.frames) >= 116:      # the first chunk row is the scene of frames 10..990 ms
        direct = embedder.chunk_vectors(clip.frames[:99], clip.timestamps[:99], 16000)
        np.testing.assert_array_equal(rows[0], direct[0])


@pytest.mark.parametrize("blocks", [4, 8, 12])
def test_embeddings_after_k_blocks(authors_model, blocks):
    x = torch.randn(3, 40, 98)
    with torch.no_grad():
        want = authors_model.to_patch_embed(x)
        for layer in authors_model.layers[:blocks]:
            want = layer(want)
        got = authors_model.encode(x, n_blocks=blocks)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    shallow = KWMLPEmbedder(authors_model, n_blocks=blocks).embed([sine(500, 1.0)])[0]
    assert shallow.frames.shape == (100, 64) and np.isfinite(shallow.scene).all()


def test_no_stochastic_depth_in_eval_mode():
    torch.manual_seed(0)
    model = KWMLP(num_classes=5, depth=6, prob_survival=0.5).eval()
    x = torch.randn(2, 40, 98)
    assert model.kept_blocks(generator(1)) == list(range(6))
    with torch.no_grad():
        outs = [model(x, generator=generator(s)) for s in range(5)]
        full = model.to_patch_embed(x)
        for layer in model.layers:
            full = layer(full)
    for out in outs:
        torch.testing.assert_close(out, model.to_logits(full), rtol=0, atol=0)
    model.train()
    kept = [model.kept_blocks(generator(s)) for s in range(50)]
    assert any(len(k) < 6 for k in kept) and all(len(k) >= 1 for k in kept)
    assert 2.0 < np.mean([len(k) for k in kept]) < 4.0          # ~ 6 x 0.5 on average


def test_training_step_changes_gating_projections():
    torch.manual_seed(0)
    model = KWMLP(num_classes=4, depth=2)
    before = [layer.fn.fn.sgu.proj.weight.detach().clone() for layer in model.layers]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    x, y = torch.randn(8, 40, 98), torch.arange(8) % 4
    settings = PretrainConfig()
    g = generator(0)
    changed = set()
    for _ in range(3):             # a block may be skipped in one step (stochastic depth)
        loss, correct = train_step(model, opt, x, y, g, settings)
        assert np.isfinite(loss) and 0 <= correct <= 8
        changed |= {i for i, (layer, w) in enumerate(zip(model.layers, before))
                    if not torch.equal(layer.fn.fn.sgu.proj.weight, w)}
    assert changed == {0, 1}


def test_spec_augment_masks_bands_of_the_given_widths():
    x = torch.ones(64, 40, 98)
    out = spec_augment(x, generator(3))
    zero_t = (out == 0).all(dim=1)            # (n, 98): frames wiped by a time mask
    zero_f = (out == 0).all(dim=2)            # (n, 40): coefficients wiped by a frequency mask
    assert (zero_t.sum(1) <= 50).all() and (zero_f.sum(1) <= 14).all()
    assert zero_t.any(1).float().mean() > 0.8 and zero_f.any(1).float().mean() > 0.5
    rest = out[~(zero_t[:, None, :] | zero_f[:, :, None])]
    assert (rest == 1).all()                  # nothing but whole bands is touched
    torch.testing.assert_close(spec_augment(x, generator(3)), out, rtol=0, atol=0)
    assert torch.equal(x, torch.ones(64, 40, 98))
