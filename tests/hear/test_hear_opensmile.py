"""bow.hear.opensmile: hear-validator without a model file, batches against single clips and the
library on real ESC-10 audio, clips shorter than openSMILE's windows, the evaluation kit through
pipelines.hear_eval without --model, and a machine without the opensmile package (simulated)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bow.audio.load import read_audio
from bow.hear import kit, scores
from bow.hear import opensmile as hear_opensmile
from bow.io.stage import read_json
from bow.peers import opensmile as osm
from tests.hear.test_hear import run_validator, validator  # noqa: F401  (fixture)
from tests.hear.test_hear_kit import _python, heareval  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def model(opensmile_package):
    return hear_opensmile.load_model()


@pytest.mark.slow
def test_validator_passes_without_a_model_file(validator, opensmile_package):  # noqa: F811
    out = run_validator(validator, "bow.hear.opensmile", "")
    assert "No weight file provided" in out and "Interval between timestamps is 10.0ms" in out
    assert "timestamp_embedding_size: 130" in out and "scene_embedding_size: 6373" in out


def test_batches_equal_single_clips_and_the_library(model, esc10_dir):
    files = sorted((esc10_dir / "audio").glob("*.flac"))
    clips = np.stack([read_audio(files[i])[8000:8000 + 24_000] for i in (10, 250)])  # 1.5 s
    emb, ts = hear_opensmile.get_timestamp_embeddings(torch.from_numpy(clips), model)
    scene = hear_opensmile.get_scene_embeddings(torch.from_numpy(clips), model)
    assert emb.shape == (2, 145, 130) and ts.shape == (2, 145) and scene.shape == (2, 6373)
    assert emb.dtype == ts.dtype == scene.dtype == torch.float32
    np.testing.assert_array_equal(ts[1].numpy(), 30 + 10 * np.arange(145, dtype=np.float32))
    for i, clip in enumerate(clips):
        one, one_ts = hear_opensmile.get_timestamp_embeddings(torch.from_numpy(clip[None]),
                                                              model)
        np.testing.assert_array_equal(one[0].numpy(), emb[i].numpy())
        np.testing.assert_array_equal(one_ts[0].numpy(), ts[i].numpy())
        np.testing.assert_array_equal(emb[i].numpy(), osm.frames(clip)[0])
        np.testing.assert_array_equal(scene[i].numpy(), osm.functionals(clip))
    np.testing.assert_array_equal(
        hear_opensmile.get_scene_embeddings(torch.from_numpy(clips[1:]), model)[0], scene[1])


@pytest.mark.parametrize("samples", [0, 10, 1279])
def test_clips_shorter_than_the_windows(model, samples):
    audio = torch.rand(3, samples) - 0.5
    emb, ts = hear_opensmile.get_timestamp_embeddings(audio, model)
    scene = hear_opensmile.get_scene_embeddings(audio, model)
    assert emb.shape == (3, 2, 130) and ts[0].tolist() == [30.0, 40.0]
    assert torch.isfinite(emb).all() and torch.isfinite(scene).all() and scene.shape == (3, 6373)
    empty = hear_opensmile.get_timestamp_embeddings(torch.zeros(0, 16_000), model)
    assert empty[0].shape == (0, 95, 130) and empty[1].shape == (0, 95)


def test_load_model_takes_no_file(model):
    assert model.sample_rate == 16_000 and model.opensmile_version == osm.version()
    with pytest.raises(ValueError, match="needs no model file"):
        hear_opensmile.load_model("kwmlp.pth")
    with pytest.raises(ValueError, match=r"\(n, samples\)"):
        hear_opensmile.get_scene_embeddings(torch.zeros(16_000), model)


def test_without_the_package(without_opensmile):
    with pytest.raises(osm.OpenSmileMissing, match="research use only"):
        hear_opensmile.load_model()


@pytest.mark.slow
def test_the_kit_scores_it_without_a_model_file(heareval, opensmile_package,  # noqa: F811
                                                esc10_dir, tmp_path):
    """pipelines.hear_eval --module bow.hear.opensmile (no --model) on ESC-10, 2 clips a fold,
    with the kit's smallest grid: the model is named after the module."""
    from pipelines import export_hear_task
    task = tmp_path / "tasks" / "esc10_tiny"
    export_hear_task.run(esc10_dir, task, export_hear_task.ExportHearTaskConfig(
        clips_per_split=2), progress=False)
    out = tmp_path / "out"
    done = _python(["-m", "pipelines.hear_eval", "--module", "bow.hear.opensmile", "--tasks",
                    str(task), "--out", str(out), "--grid", "faster", "--grid-points", "1",
                    "--threads", "1", "--device", "cpu"])
    assert done.returncode == 0, done.stdout + done.stderr
    rows = scores.collect(out / "embeddings")
    assert {r["name"] for r in rows} == {"opensmile"} and rows[0]["metric"] == "top1_acc"
    assert rows[0]["folds"] == 5 and 0 <= rows[0]["mean"] <= 1
    emb = out / "embeddings" / "opensmile" / "bow.hear.opensmile" / "esc10_tiny"
    assert (emb / ".done.embeddings").is_file()
    assert read_json(out / "embeddings" / "opensmile" / kit.MODEL) == kit.model_identity(
        "bow.hear.opensmile", None)                            # no file, no SHA-256
