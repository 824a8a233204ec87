"""pipelines.sweep: resumable points, and each sweep end to end on a tiny dataset (slow)."""
import csv

import pytest

from bow.data.synth import make_default_dataset
from pipelines import layout, run_config, sweep
from tests.heads_data import one_torch_thread, synthetic_counts, write_store  # noqa: F401

PNG = b"\x89PNG\r\n\x1a\n"


def test_grid_options_parse_comma_separated_values():
    assert sweep._values(int)("16,64, 256") == (16, 64, 256)
    assert sweep._values(float)("0,0.35") == (0.0, 0.35)
    assert set(sweep.GRID) == {"sizes", "widths", "dropouts", "probabilities", "algorithms",
                               "depths"}
    assert 0.35 in sweep.GRID["probabilities"]          # the paper's optimum is on the grid


def test_unknown_sweep_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown sweep"):
        sweep.sweep("depth", tmp_path, tmp_path)


TINY = {"train_autoencoders": {"hidden": 16, "epochs": 1, "steps_per_epoch": 3,
                               "batch_size": 16, "max_val_tokens": 500},
        "fit_codebooks": {"n_codes": 16, "niter": 5},
        "pretrain_kwmlp": {"depth": 2, "epochs": 1, "warmup_epochs": 0, "batch_size": 16},
        "evaluate": {"max_epochs": 2, "width": 16}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny built-in-style dataset (24 dev + 8 eval clips of 0.5-1.5 s) and its config."""
    data = make_default_dataset(tmp_path_factory.mktemp("tiny") / "data", n_dev=24, n_eval=8,
                                max_seconds=1.5)
    return data, run_config.resolve_config("paper", TINY)


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted((folder / "points").glob("*.json"))}


@pytest.mark.slow
def test_codebook_size_sweep_resumes_and_grows(tiny, tmp_path, counting):
    data, config = tiny
    art = tmp_path / "art"
    rows = sweep.sweep("codebook-size", data, art, config, "cpu", False, lambda m: None,
                       sizes=(16, 1024), widths=(8,), dropouts=(0.1,))
    assert [(r["n_codes"], "error" in r) for r in rows] == [(16, False), (1024, True)]
    assert "1024 codes" in rows[1]["error"] and len(counting) == 1
    folder = layout.sweep(art, "codebook-size")
    kind = config.encoder                                  # the run's main arm
    assert layout.autoencoders(folder / "D16", kind).resolve() == \
        layout.autoencoders(art, kind).resolve()
    assert layout.bow_store(folder / "D16", kind).is_file()
    assert layout.sweep_plot(art, "codebook-size").read_bytes().startswith(PNG)
    before = _mtimes(folder)
    sweep.sweep("codebook-size", data, art, config, "cpu", False, lambda m: None,
                sizes=(16, 1024), widths=(8,), dropouts=(0.1,))
    assert _mtimes(folder) == before and len(counting) == 1          # nothing redone
    rows = sweep.sweep("codebook-size", data, art, config, "cpu", False, lambda m: None,
                       sizes=(16,), widths=(8, 12), dropouts=(0.1,))
    assert len(counting) == 2                                          # only the new point
    assert [r["point"] for r in rows] == ["D16_w8_p0.1", "D16_w12_p0.1", "D1024_w8_p0.1"]
    with open(folder / "results.csv", newline="") as f:
        assert [r["point"] for r in csv.DictReader(f)] == [r["point"] for r in rows]


@pytest.mark.slow
def test_masking_and_kwmlp_sweeps(tiny, tmp_path, counting):
    data, config = tiny
    art = tmp_path / "art"
    rows = sweep.sweep("masking", data, art, config, "cpu", False, lambda m: None,
                       probabilities=(0.0, 0.5))
    assert [r["mask_p"] for r in rows] == [0.0, 0.5]
    assert [h.mask_p for h in counting] == [0.0, 0.5]
    assert all(h.width == 16 and h.max_epochs == 2 for h in counting)   # the run's heads
    assert layout.bow_store(art, config.encoder).is_file()  # the run's own store, shared
    rows = sweep.sweep("kwmlp-depth", data, art, config, "cpu", False, lambda m: None,
                       depths=(1, 2, 3))
    assert [r["blocks"] for r in rows] == [1, 2, 3]
    assert "the checkpoint has 2 blocks" in rows[2]["error"]
    assert (art / "kwmlp" / "best.pth").is_file()         # our own pretraining, as in the run
    rows = sweep.sweep("kwmlp-scene", data, art, config, "cpu", False, lambda m: None,
                       algorithms=("mean", "iterative"))
    assert [r["scene_algorithm"] for r in rows] == ["iterative", "mean"]   # the paper's order
    for name in ("masking", "kwmlp-depth", "kwmlp-scene"):
        assert layout.sweep_plot(art, name).read_bytes().startswith(PNG)
