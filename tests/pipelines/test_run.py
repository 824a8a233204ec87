"""pipelines.run: presets and TOML, the keyword view, and the end-to-end runs (slow)."""
import csv
import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bow.bagofwords.training import DEFAULT_ENCODER, ENCODERS
from bow.config import ConfigError
from bow.data.datasets import load_dataset
from bow.io.store import multi_hot
from bow.peers import opensmile
from pipelines import run_config, run_report
from pipelines.orchestrate import Stages, keyword_view, n_stages, opensmile_stage

ROOT = Path(__file__).resolve().parents[2]
BUDGETS = {"hidden", "epochs", "steps_per_epoch", "patience", "n_codes", "frame_codes", "niter",
           "nredo", "warmup_epochs", "batch_size", "max_epochs"}


def _changed(config, default) -> set:
    return {f.name for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(default, f.name)}


def test_default_preset_is_every_stages_defaults():
    config = run_config.resolve_config("default")
    for name, cls in run_config.STAGES.items():
        assert _changed(getattr(config, name), cls()) == (
            {"feature_sets"} if name == "evaluate" else set()), name
    assert config.encoder == DEFAULT_ENCODER and config.sweeps == ()
    assert config.evaluate.feature_sets == ("bow", *(f"bow-{k}" for k in ENCODERS
                                                     if k != DEFAULT_ENCODER),
                                            "kwmlp", "audiomlp", "bow+kwmlp", "bow+audiomlp")


def test_paper_preset_is_vermas_configuration():
    config = run_config.resolve_config("paper")
    assert config.encoder == "trained" and config.encoders[0] == "trained"
    assert config.train_autoencoders.tokens == "raw" and config.embed.assignment == "hard"
    assert config.fit_codebooks.n_codes == 256 and config.train_autoencoders.hidden == 2048
    assert config.evaluate.feature_sets[0] == "bow-trained"
    assert config.evaluate.feature_sets[-2:] == ("bow-trained+kwmlp", "bow-trained+audiomlp")
    for name in ("pretrain_kwmlp", "embed_kwmlp", "pretrain_audiomlp", "embed_audiomlp",
                 "evaluate"):                                      # the rest: the defaults
        assert _changed(getattr(config, name), run_config.STAGES[name]()) <= {"feature_sets"}


def test_quick_preset_only_shrinks_budgets():
    config = run_config.resolve_config("quick")
    for name, cls in run_config.STAGES.items():
        assert _changed(getattr(config, name), cls()) - {"feature_sets"} <= BUDGETS, name
    assert config.fit_codebooks.n_codes < run_config.FitCodebooksConfig().n_codes
    assert config.fit_codebooks.frame_codes < run_config.FitCodebooksConfig().frame_codes
    assert config.pretrain_kwmlp.epochs < run_config.PretrainKWMLPConfig().epochs
    assert config.pretrain_kwmlp.depth == 12     # the architecture is the paper's
    assert config.pretrain_audiomlp.epochs < run_config.PretrainAudioMLPConfig().epochs
    assert config.pretrain_audiomlp.resolved() == dataclasses.replace(
        run_config.PretrainAudioMLPConfig(), epochs=config.pretrain_audiomlp.epochs).resolved()
    sweeps = dict(config.sweeps)
    assert sweeps["codebook-size"]["widths"] == (config.evaluate.width,)
    assert run_config.resolve_config("quick", sweeps=False).sweeps == ()


def test_the_opensmile_peer_joins_the_run_when_installed(monkeypatch):
    for installed in (False, True):
        monkeypatch.setattr(opensmile, "available", lambda: installed)
        config = run_config.resolve_config("quick")
        assert config.opensmile is installed
        assert config.evaluate.feature_sets == run_config.feature_sets(DEFAULT_ENCODER)
        sets = config.evaluate_config().feature_sets
        if installed:                  # after the project's models; fused with the main arm
            assert sets[sets.index("audiomlp") + 1] == "opensmile"
            assert sets[-1] == "bow+opensmile" and len(sets) == 9
        else:
            assert sets == config.evaluate.feature_sets and len(sets) == 7
    assert run_config.resolve_config("quick", opensmile=False).evaluate_config().feature_sets \
        == run_config.feature_sets(DEFAULT_ENCODER)
    chosen = run_config.resolve_config("quick", {"evaluate": {"feature_sets": ["bow"]}})
    assert chosen.evaluate_config().feature_sets == ("bow",)     # a TOML's own list is kept
    assert chosen.embed_opensmile == run_config.EmbedOpenSmileConfig()
    assert run_config.resolve_config("quick", {"embed_opensmile": {"shard_size": 8}}) \
        .embed_opensmile.shard_size == 8


def test_stage_count_with_and_without_the_peer():
    quick = run_config.resolve_config("quick", opensmile=False)
    assert n_stages(quick) == 16                      # 9 bag of words, 5 models, evaluate, sweeps
    assert n_stages(dataclasses.replace(quick, opensmile=True)) == 17
    given = run_config.resolve_config("default", kwmlp_checkpoint="k.pth",
                                      audiomlp_checkpoint="a.pth", opensmile=True)
    assert n_stages(given) == 9 + 2 + 1 + 1


@pytest.mark.parametrize("installed", [False, True])
def test_a_run_without_the_peer_says_so_in_one_line(installed, without_opensmile, monkeypatch,
                                                     tmp_path):
    if installed:                                    # installed, but left out by the user
        monkeypatch.setattr(opensmile, "available", lambda: True)
    lines = []
    stages = Stages(1, lines.append)
    config = run_config.resolve_config("quick", opensmile=False if installed else None)
    assert not config.opensmile
    assert opensmile_stage(stages, tmp_path, tmp_path, config, "cpu", False, lines.append) is None
    assert stages.done == [] and len(lines) == 1
    assert lines[0] == "openSMILE peer skipped: " + (
        "--no-opensmile" if installed else opensmile.MISSING)


def test_toml_splits_and_stage_tables():
    config = run_config.resolve_config("quick", {
        "train_splits": ["1", "2", "3"], "eval_splits": ["5"],
        "fit_codebooks": {"n_codes": 16}, "evaluate": {"mask_p": 0.2, "width": 256}})
    assert config.train_autoencoders.train_splits == ("1", "2", "3")
    assert config.fit_codebooks.train_splits == ("1", "2", "3")
    assert config.evaluate.train_splits == ("1", "2", "3")
    assert config.evaluate.eval_splits == ("5",)
    assert config.pretrain_kwmlp.train_splits == ("train",)   # the keyword view's own splits
    assert config.fit_codebooks.n_codes == 16 and config.evaluate.mask_p == 0.2
    assert config.train_autoencoders.hidden == 512            # the preset stays underneath
    assert dict(config.sweeps)["codebook-size"]["widths"] == (256,)


@pytest.mark.parametrize("toml, message", [
    ({"heads": {"width": 3}}, "unknown key"),
    ({"fit_codebooks": {"n_code": 16}}, r"\[fit_codebooks\]: unknown option\(s\) \['n_code'\]"),
    ({"embed": {"encoder": "random"}}, r"\['encoder'\] are set by pipelines.run"),
    ({"fit_codebooks": {"n_codes": 1}}, r"\[fit_codebooks\]: n_codes must be an integer"),
    ({"evaluate": {"mask_p": "lots"}}, r"\[evaluate\]: --mask-p"),
])
def test_bad_config_is_a_clear_error(toml, message):
    with pytest.raises(ConfigError, match=message):
        run_config.resolve_config("paper", toml)


def test_config_file_and_preset_from_the_command_line(tmp_path):
    parser = run_config.argparse.ArgumentParser()
    run_config.add_run_options(parser)
    toml = tmp_path / "run.toml"
    toml.write_text('[fit_codebooks]\nn_codes = 16\n')
    import faiss
    import torch
    threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    parse = lambda argv: run_config.config_from_run_args(parser.parse_args(argv))  # noqa: E731
    try:
        config = parse(["--config", str(toml)])
        assert config.preset == "quick" and config.fit_codebooks.n_codes == 16
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
        config = parse(["--data", "x", "--threads", "2"])
        assert config.preset == "default" and config.sweeps == () and config.config_file is None
        assert torch.get_num_threads() == 2
        assert config.opensmile is opensmile.available()
        assert not parse(["--data", "x", "--no-opensmile"]).opensmile
    finally:
        torch.set_num_threads(threads[0])
        faiss.omp_set_num_threads(threads[1])
    toml.write_text("not = [valid")
    with pytest.raises(ConfigError, match=f"{toml}: cannot read"):
        run_config.config_from_run_args(parser.parse_args(["--config", str(toml)]))


@pytest.fixture
def labels_csv_data(tmp_path):
    """A labels.csv data set (audio is never read here): multi-label clips, no val split."""
    root = tmp_path / "data"
    (root / "audio" / "sub").mkdir(parents=True)
    rows = ["fname,labels,split"]
    for i in range(10):
        name = f"sub/clip{i}.wav" if i == 0 else f"clip{i}.wav"
        (root / "audio" / name).write_bytes(b"RIFF")
        labels = "dog,animal" if i % 2 else "rain"
        rows.append(f'{name},"{labels}",{"test" if i >= 8 else "train"}')
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_keyword_view_keeps_first_labels_and_links_the_audio(labels_csv_data, tmp_path):
    dataset = load_dataset(labels_csv_data)
    folder, info = keyword_view(dataset, tmp_path / "art", run_config.resolve_config("paper"))
    assert folder == tmp_path / "art" / "kwmlp" / "keywords"
    view = load_dataset(folder)
    assert info == {"train": 7, "val": 1, "multi_label": 4, "classes": 2}   # 10% held out
    assert sorted(c.split for c in view.clips) == ["train"] * 7 + ["val"]
    original = {c.fname: c for c in dataset.clips}
    for clip in view.clips:
        assert clip.labels == original[clip.fname].labels[:1]
        assert clip.path.is_symlink() and clip.path.resolve() == original[clip.fname].path
    assert "test" not in {c.split for c in view.clips}
    before = (folder / "labels.csv").stat().st_mtime_ns
    keyword_view(dataset, tmp_path / "art", run_config.resolve_config("paper"))
    assert (folder / "labels.csv").stat().st_mtime_ns == before     # unchanged: not rewritten


def test_sweep_commands_reuse_the_runs_options(tmp_path):
    config = run_config.resolve_config("quick", config_file="my.toml")
    builtin = run_report.sweep_options(tmp_path / "data" / "default", tmp_path, config)
    assert builtin == f"--artifacts {tmp_path} --preset quick --config my.toml"
    other = run_report.sweep_options(Path("/x/mini"), tmp_path, run_config.resolve_config("paper"))
    assert other.startswith("--data /x/mini ") and other.endswith("--preset paper")
    assert run_config.resolve_config("default", {"encoder": "random"}).encoders[0] == "random"


# ----------------------------------------------------------------------------- end to end
def _command(args, timeout=900):
    """Run ``python -m pipelines.run ARGS`` from the checkout, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "pipelines.run", "--no-progress", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


PEER = opensmile.available()     # the run has the openSMILE peer when the package is installed


def _check_report(report: Path, data: Path,
                  features=run_config.feature_sets(DEFAULT_ENCODER, PEER)) -> dict:
    """Every picture exists and is linked; every mAP is finite and above chance."""
    text = report.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    for link in links:
        assert (report.parent / link).is_file(), link
    for png in report.parent.glob("*.png"):
        assert png.name in links, f"{png.name} is not linked from {report}"
    for name in ("codebook_usage.png", "autoencoder_reconstructions.png"):
        assert name in links
    dataset = load_dataset(data)
    y = np.stack([multi_hot(c.labels, dataset.vocabulary) for c in dataset.select(["eval"])])
    prevalence = y.mean(0)
    chance = prevalence[prevalence > 0].mean()
    with open(report.parent / "results.csv", newline="") as f:
        scores = {r["features"]: float(r["map"]) for r in csv.DictReader(f) if r["fold"] == "all"}
    assert list(scores) == list(features)
    for name, value in scores.items():
        assert math.isfinite(value) and value > chance, (name, value, chance)
    assert f"{chance:.3f}" in text
    return scores


@pytest.mark.slow
def test_the_readme_main_command_on_the_built_in_dataset(tmp_path):
    """``python -m pipelines.run`` (README's main command) with --artifacts in tmp_path."""
    art = tmp_path / "artifacts"
    out = _command(["--artifacts", str(art)])
    report = art / "reports" / "default" / "report.md"
    assert out.rstrip().endswith(f"report: {report}")
    assert "preset: quick" in out and "no --kwmlp-checkpoint: our own KW-MLP" in out
    assert "no --audiomlp-checkpoint: our own Audio-MLP" in out
    assert "| default | bow+audiomlp |" in out and "chance mAP on eval" in out
    assert ("| default | bow+opensmile |" in out) is PEER
    assert ("openSMILE peer skipped: " + opensmile.MISSING in out) is not PEER
    _check_report(report, art / "data" / "default")
    text = report.read_text()
    for name in ("codebook-size", "masking"):          # the quick run's small sweeps, linked
        assert f"../../sweeps/{name}/{name}.png" in text
    assert "python -m pipelines.sweep kwmlp-scene --artifacts" in text
    assert (art / "kwmlp" / "best.pth").is_file() and (art / "audiomlp" / "best.pth").is_file()
    assert "../../audiomlp/curves.png" in text
    assert ("### openSMILE\n\nThe classic peer: openSMILE" in text) is PEER
    # a second run redoes nothing
    again = _command(["--artifacts", str(art)])
    n = 16 + PEER
    redone = re.findall(rf"\n(\[\d+/{n}\] [^\n]*)\n +done", again)
    assert again.count("up to date, skipped") == n + 3, redone  # + masking's upstream
    assert "| up to date | 0.0 (built in" in report.read_text()
    assert "done before" in again and report.is_file()
    rows = [line for line in out.splitlines() if line.startswith("| default")]
    assert len(rows) == 7 + 2 * PEER and all(line in again for line in rows)


@pytest.mark.slow
def test_quick_run_on_fsd50k_mini_with_the_authors_checkpoint(fsd50k_mini_dir, kwmlp_dir,
                                                               audiomlp_dir, tmp_path):
    """The quick configuration on real FSD50K-layout audio; the authors' checkpoint instead of
    our own pretraining, no sweeps and no openSMILE peer (2,000 audio-seconds, minutes of
    openSMILE) keep it within the CI budget (all three are covered above)."""
    art = tmp_path / "artifacts"
    out = _command(["--data", str(fsd50k_mini_dir), "--artifacts", str(art), "--preset",
                    "quick", "--no-sweeps", "--kwmlp-checkpoint", str(kwmlp_dir / "kwmlp.pth"),
                    "--audiomlp-checkpoint", str(audiomlp_dir / "audiomae.pth"),
                    "--no-opensmile"])
    assert "pretrain" not in out and not (art / "kwmlp").exists()
    assert not (art / "audiomlp").exists()
    assert "[12/12] evaluate" in out and not (art / "stores" / "opensmile.h5").exists()
    assert "openSMILE peer skipped: " + ("--no-opensmile" if PEER else opensmile.MISSING) in out
    report = art / "reports" / "default" / "report.md"
    _check_report(report, fsd50k_mini_dir, run_config.feature_sets(DEFAULT_ENCODER))
    assert f"Checkpoint given: `{kwmlp_dir / 'kwmlp.pth'}`" in report.read_text()
    assert f"Checkpoint given: `{audiomlp_dir / 'audiomae.pth'}`" in report.read_text()
