"""Audio-MLP: the authors' checkpoint and golden embeddings, batching, the scene embedding's zero
padding and interpolation, our checkpoint format."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bow.audio.load import n_chunks, read_audio
from bow.audiomlp.embed import SCENE_STEPS, AudioMLPEmbedder
from bow.audiomlp.model import (
    AudioMLPDecoder,
    AudioMLPEncoder,
    CheckpointError,
    load_checkpoint,
    n_parameters,
    save_checkpoint,
)
from bow.audiomlp.scaling import InputScaling
from tests.conftest import DEVICES, sine
from tests.kwmlp.test_scene import interp


@pytest.fixture(scope="module")
def golden(audiomlp_dir):
    z = np.load(audiomlp_dir / "golden_public.npz")
    return [{k: z[f"c{i:02d}_{k}"] for k in ("audio", "timestamp_embeddings", "timestamps",
                                               "scene_embedding")} | {"name": str(name)}
            for i, name in enumerate(z["names"])]


@pytest.fixture(scope="module")
def authors(audiomlp_dir):
    return load_checkpoint(audiomlp_dir / "audiomae.pth")


def test_checkpoint_loads_strictly(audiomlp_dir, authors):
    encoder, scaling = authors
    state = torch.load(audiomlp_dir / "audiomae.pth", weights_only=True)["model_state_dict"]
    assert set(encoder.state_dict()) == set(state) and len(state) == 64
    assert n_parameters(encoder) == 213_036 and encoder.embed_dim == 8
    assert scaling.kind == "power" and isinstance(encoder.bottleneck[1], torch.nn.GELU)
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("damage, message", [
    ("drop", "Missing key"), ("extra", "Unexpected key"), ("shape", "size mismatch"),
    ("no_key", "no 'model_state_dict'"), ("junk", "not a readable torch checkpoint"),
    ("truncated", "not a readable torch checkpoint"), ("scaling", "input scaling"),
    ("kwmlp", "does not fit")])
def test_bad_checkpoints_name_the_file(audiomlp_dir, tmp_path, damage, message):
    src = audiomlp_dir / "audiomae.pth"
    state = dict(torch.load(src, weights_only=True)["model_state_dict"])
    path = tmp_path / f"{damage}.pth"
    if damage == "drop":
        state.pop("bottleneck.0.bias")
    elif damage == "extra":
        state["decoder.project.weight"] = torch.zeros(64, 8)
    elif damage == "shape":
        state["bottleneck.0.weight"] = torch.zeros(4, 64)
    elif damage == "kwmlp":
        state = {k: v for k, v in state.items() if not k.startswith("bottleneck")}
    if damage == "junk":
        path.write_text("not a checkpoint")
    elif damage == "truncated":
        path.write_bytes(src.read_bytes()[:10_000])
    elif damage == "no_key":
        torch.save({"state_dict": state}, path)
    elif damage == "scaling":
        torch.save({"model_state_dict": state, "input_scaling": {"kind": "logmel"}}, path)
    else:
        torch.save({"model_state_dict": state}, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fast", [True, False])
def test_golden_outputs_every_clip(golden, authors, fast):
    """Timestamps exactly; embeddings within 1e-3 of the largest reference value (measured:
    3.6e-6), every clip; clips of 0.3-10 s, so scenes of 98 (zero padding), 198 and up to 998
    frames (interpolation)."""
    embedder = AudioMLPEmbedder(*authors, fast=fast)
    worst = {"frames": 0.0, "scene": 0.0}
    for clip in golden:
        got = embedder.embed([clip["audio"]])[0]
        np.testing.assert_array_equal(got.timestamps, clip["timestamps"])
        for key, mine, ref in (("frames", got.frames, clip["timestamp_embeddings"]),
                               ("scene", got.scene, clip["scene_embedding"])):
            assert mine.shape == ref.shape and mine.dtype == np.float32, clip["name"]
            error = np.abs(mine - ref).max() / np.abs(ref).max()
            assert error <= 1e-3, clip["name"]
            worst[key] = max(worst[key], error)
    print(f"fast={fast}: worst max |error| / max |reference| over the {len(golden)} clips: "
          f"timestamp embeddings {worst['frames']:.2g}, scene {worst['scene']:.2g}")


def test_a_batch_equals_its_items_one_by_one(golden, authors, esc10_dir):
    """Clips of every length in one batch, with chunk batches that cut through clips: the same
    bits as each clip alone (the fast path; the module path agrees to 1e-5)."""
    audios = [c["audio"] for c in golden] + [read_audio(p) for p in
                                             sorted((esc10_dir / "audio").glob("*.flac"))[:6]]
    for batch_chunks in (32, 7):
        embedder = AudioMLPEmbedder(*authors, batch_chunks=batch_chunks)
        together = embedder.embed(audios)
        for clip, audio in zip(together, audios):
            alone = embedder.embed([audio])[0]
            np.testing.assert_array_equal(clip.frames, alone.frames)
            np.testing.assert_array_equal(clip.scene, alone.scene)
    slow = AudioMLPEmbedder(*authors, fast=False).embed(audios)
    for a, b in zip(slow, together):
        np.testing.assert_allclose(a.frames, b.frames, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.scene, b.scene, rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_devices_agree_with_the_cpu(golden, authors, device):
    audios = [c["audio"] for c in golden[5:9]]
    cpu = AudioMLPEmbedder(*authors).embed(audios)
    other = AudioMLPEmbedder(*authors, device=device).embed(audios)
    authors[0].to("cpu")
    authors[1].to("cpu")
    for a, b in zip(cpu, other):
        np.testing.assert_allclose(b.frames, a.frames, rtol=0, atol=1e-4)
        np.testing.assert_allclose(b.scene, a.scene, rtol=0, atol=1e-4)


def test_scene_zero_pads_short_clips_and_interpolates_long_ones(authors):
    embedder = AudioMLPEmbedder(*authors)
    short, long = sine(440, 0.5), np.tile(sine(300, 1.0) * np.linspace(0, 1, 16000,
                                                                       dtype=np.float32), 7)
    (seq_short, seq_long), (e_short, e_long) = (embedder.sequences([short, long]),
                                                embedder.embed([short, long]))
    assert seq_short.shape == (98, 8) and seq_long.shape == (798, 8)      # 1 and 8 chunks
    scene = e_short.scene.reshape(8, SCENE_STEPS)                         # feature-major
    np.testing.assert_array_equal(scene[:, :98], seq_short.numpy().T)
    assert (scene[:, 98:] == 0).all() and scene[:, :98].any()
    want = seq_long.numpy().astype(np.float64)
    for size in (399, 199, 198):           # 798 / 198 = 4.03: two halvings, then one step
        want = interp(want, size)
    np.testing.assert_allclose(e_long.scene, want.T.reshape(-1), rtol=0, atol=1e-4)  # fp32
    assert e_short.frames.shape == (50, 8) and e_long.frames.shape == (700, 8)


def test_chunk_vectors_align_with_the_other_stores(authors, esc10_dir):
    embedder = AudioMLPEmbedder(*authors)
    audio = read_audio(sorted((esc10_dir / "audio").glob("*.flac"))[3])
    emb = embedder.embed([audio])[0]
    rows = embedder.chunk_vectors(emb.frames, emb.timestamps, len(audio))
    assert rows.shape == (n_chunks(len(audio)), SCENE_STEPS * 8)
    first = rows[0].reshape(8, SCENE_STEPS)                   # frames at 10..990 ms: 99 of them
    np.testing.assert_array_equal(first[:, :99], emb.frames[:99].T)
    assert (first[:, 99:] == 0).all()


def test_our_checkpoint_format_round_trips(tmp_path):
    torch.manual_seed(0)
    encoder = AudioMLPEncoder(depth=2, bottleneck_act="none").eval()
    decoder = AudioMLPDecoder(depth=1, output_act="none")
    scaling = InputScaling("logmel").fit(torch.rand(4, 40, 98))
    path = tmp_path / "ours.pth"
    save_checkpoint(path, encoder, scaling, decoder, config={"recipe": "ours"})
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"model_state_dict", "input_scaling", "architecture",
                          "decoder_state_dict", "config"}
    again, sc = load_checkpoint(path)
    assert isinstance(again.bottleneck[1], torch.nn.Identity) and sc.kind == "logmel"
    power = torch.rand(3, 40, 98)
    torch.testing.assert_close(again(sc(power)), encoder(scaling(power)), rtol=0, atol=0)
    save_checkpoint(tmp_path / "plain.pth", encoder)           # a linear bottleneck is recorded
    assert isinstance(load_checkpoint(tmp_path / "plain.pth")[0].bottleneck[1], torch.nn.Identity)
