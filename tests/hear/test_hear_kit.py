"""bow.hear.kit and bow.hear.scores: the kit's environments, one folder per model, reuse rules
(on a stand-in for the kit's programs), score tables; with the kit installed (the README's test
command installs it), exported tasks through the kit's own loaders and both of its runners end
to end on tiny tasks with its smallest grid. Without the kit those skip locally and fail under
CI=true."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bow.hear import kit, scores, tfstub
from bow.io.stage import InputError
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def heareval():
    """Skip locally, fail under CI, when the kit is not installed in this interpreter."""
    if importlib.util.find_spec("heareval") is None:
        message = ("the HEAR evaluation kit is not installed: pip install \".[hear]\" && pip "
                   f"install --no-deps {kit.KIT_PINS} (the README's test command does)")
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    assert importlib.metadata.version("heareval") == kit.KIT_VERSION


def test_environments_of_the_two_programs(monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    embed = kit.kit_env(1, stand_in=True, unsafe_load=False)
    predict = kit.kit_env(1, stand_in=False, unsafe_load=True, device="cpu")
    assert embed["PYTHONPATH"].split(os.pathsep) == [str(tfstub.PATH), str(ROOT), "/elsewhere"]
    assert str(tfstub.PATH) not in predict["PYTHONPATH"]
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in embed
    assert embed["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1"          # left as the user set it
    assert predict["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in predict         # torch refuses both
    assert predict["CUDA_VISIBLE_DEVICES"] == ""                # --device cpu hides CUDA
    assert embed.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
    assert embed["OMP_NUM_THREADS"] == "1"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert "OMP_NUM_THREADS" not in kit.kit_env(None)


def test_one_folder_per_model(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    a.write_bytes(b"one bundle")
    b.write_bytes(b"another bundle")
    ida, idb = (kit.model_identity("bow.hear.bow", p) for p in (a, b))
    assert kit.default_name(ida).startswith("a-") and kit.default_name(ida) != \
        kit.default_name(idb)
    assert kit.default_name(kit.model_identity("x.hear.mine", None)) == "mine"
    kit.claim(tmp_path / "run", ida)
    kit.claim(tmp_path / "run", ida)                              # the same model: fine
    with pytest.raises(InputError, match="another model"):
        kit.claim(tmp_path / "run", idb)


@pytest.fixture
def fake_kit(monkeypatch):
    """kit._run replaced by a stand-in that writes what the kit's programs write; the calls."""
    calls = []

    def run(cmd, env, cwd, log):
        calls.append(cmd[2])
        if cmd[2] == "heareval.embeddings.runner":
            task = Path(cmd[cmd.index("--tasks-dir") + 1]) / cmd[cmd.index("--task") + 1]
            emb = Path(cmd[cmd.index("--embeddings-dir") + 1]) / cmd[3] / task.name
            emb.mkdir(parents=True)
            (emb / "task_metadata.json").write_text((task / "task_metadata.json").read_text())
            (emb / ".done.embeddings").touch()
        else:
            emb = Path(cmd[3])
            grid = cmd[cmd.index("--grid") + 1]
            folds = {f"fold0{i}": {"test_score": 0.5, "test_top1_acc": 0.5} for i in range(3)}
            agg = {"test_top1_acc_mean": 0.7 if grid == "faster" else 0.6,
                   "test_top1_acc_std": 0.05, "test_mAP_mean": float("nan"),
                   "test_mAP_std": float("nan"), "test_d_prime_mean": float("inf"),
                   "test_d_prime_std": float("nan")}
            (emb / scores.SCORES).write_text(json.dumps(dict(
                folds, aggregated_scores=agg, hparams={"hidden_layers": 1, "lr": 1e-3})))
            (emb / "prediction-done.json").write_text("{}")
        return 2.0, 1.5

    monkeypatch.setattr(kit, "_run", run)
    return calls


def _tiny_task(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "task_metadata.json").write_text(json.dumps(
        {"evaluation": ["top1_acc", "mAP", "d_prime"], "split_mode": "presplit_kfold"}))
    (folder / "fold00.json").write_text("{}")
    return folder


def test_reuse_rules(fake_kit, tmp_path):
    task = _tiny_task(tmp_path / "tasks" / "t1")
    ident = kit.model_identity("bow.hear.kwmlp", None)
    root, log = tmp_path / "out" / "embeddings" / "m1", tmp_path / "x.log"
    emb, reused = kit.embed(task, root, ident, log)
    assert emb == root / "bow.hear.kwmlp" / "t1" and not reused
    assert kit.embed(task, root, ident, log) == (emb, True)
    assert not kit.predict(emb, log, grid="faster", grid_points=1)
    assert kit.predict(emb, log, grid="faster", grid_points=1)    # same grid: reused
    assert fake_kit == ["heareval.embeddings.runner", "heareval.predictions.runner"]
    assert not kit.predict(emb, log, grid="fast", grid_points=1)  # the kit would skip it
    (task / "fold00.json").write_text('{"a.wav": ["x"]}')        # the task changed
    emb2, reused = kit.embed(task, root, ident, log)
    assert emb2 == emb and not reused and not (emb / scores.SCORES).exists()
    other = tmp_path / "out" / "embeddings" / "m2"               # another model: its own folder
    assert kit.embed(task, other, ident, log)[0].parent.parent == other
    with pytest.raises(InputError, match="grid must be"):
        kit.predict(emb, log, grid="huge")


def test_score_tables(fake_kit, tmp_path):
    out = tmp_path / "out"
    for name, grid in (("m1", "faster"), ("m2", "fast")):
        for t in ("t1", "t2"):
            task = tmp_path / "tasks" / t
            if not task.exists():
                _tiny_task(task)
            emb, _ = kit.embed(task, out / "embeddings" / name,
                               kit.model_identity("bow.hear.kwmlp", None), tmp_path / "l")
            kit.predict(emb, tmp_path / "l", grid=grid, grid_points=2)
    rows = scores.collect(out / "embeddings")
    assert [(r["task"], r["name"], r["metric"]) for r in rows][:4] == [
        ("t1", "m1", "top1_acc"), ("t1", "m1", "mAP"), ("t1", "m1", "d_prime"),
        ("t1", "m2", "top1_acc")]
    assert rows[0]["mean"] == 0.7 and rows[0]["folds"] == 3 and rows[0]["predict_s"] == 2.0
    assert math.isnan(rows[1]["mean"]) and rows[2]["mean"] == math.inf
    scores.write_tables(rows, out / "scores.csv", out / "scores.md")
    md = (out / "scores.md").read_text()
    assert "| t1 | m1 | 3 | 0.700 ± 0.050 | n/a | inf | faster/2 | 2 | 2 | 1.5 |" in md
    assert "| t2 | m2 | 3 | 0.600 ± 0.050 |" in md
    csv_lines = (out / "scores.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 12 and ",mAP,,," in csv_lines[2]


def _python(args, stand_in: bool = False):
    """This interpreter in a subprocess, with the project (and the stand-in) importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tfstub.PATH)] * stand_in
                                                      + [str(ROOT)]))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_kit_reads_our_exports_with_its_own_loaders(heareval, esc10_task, fsdd_task):
    done = _python(["-m", "tests.hear.kit_loaders", str(esc10_task), str(fsdd_task)],
                   stand_in=True)
    assert done.returncode == 0, done.stderr
    esc, fsdd = (json.loads(line) for line in done.stdout.splitlines())
    assert len(esc["plan"]) == 5 and esc["plan"][0] == {
        "train": ["fold02", "fold03", "fold04"], "valid": ["fold01"], "test": ["fold00"]}
    assert esc["nlabels"] == 10 and esc["clips"] == {f"fold0{i}": 80 for i in range(5)}
    assert esc["batch_size"] == 11 and esc["lengths"] == [116_000] and not esc["unknown_metrics"]
    assert fsdd["plan"] == [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]
    assert fsdd["clips"] == {"train": 60, "valid": 60, "test": 60} and fsdd["nlabels"] == 10
    assert len(fsdd["lengths"]) == 1


@pytest.mark.slow
def test_both_runners_end_to_end_on_tiny_tasks(heareval, esc10_dir, fsd50k_mini_dir, kwmlp_dir,
                                               tmp_path):
    """ESC-10 (5 folds, multiclass, 4 clips a fold) and fsd50k_mini (train/val/eval, multilabel,
    6 clips a split) through pipelines.hear_eval with the smallest grid (faster, 1 point)."""
    from pipelines import export_hear_task
    from pipelines.export_hear_task import ExportHearTaskConfig
    tasks = []
    for data, name, n in ((esc10_dir, "esc10_tiny", 4), (fsd50k_mini_dir, "fsd50k_tiny", 6)):
        tasks.append(tmp_path / "tasks" / name)
        export_hear_task.run(data, tasks[-1], ExportHearTaskConfig(clips_per_split=n),
                             progress=False)
    out = tmp_path / "out"
    argv = ["-m", "pipelines.hear_eval", "--module", "bow.hear.kwmlp", "--model",
            str(kwmlp_dir / "kwmlp.pth"), "--tasks", *map(str, tasks), "--out", str(out),
            "--grid", "faster", "--grid-points", "1", "--threads", "1", "--device", "cpu"]
    done = _python(argv)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = scores.collect(out / "embeddings")
    assert [(r["task"], r["metric"]) for r in rows] == [
        ("esc10_tiny", m) for m in ("top1_acc", "mAP", "d_prime", "aucroc")] + [
        ("fsd50k_tiny", m) for m in ("mAP", "d_prime", "aucroc", "top1_acc")]
    assert rows[0]["folds"] == 5 and rows[4]["folds"] == 1 and rows[0]["device"] == "cpu"
    assert 0 <= rows[0]["mean"] <= 1 and 0 <= rows[4]["mean"] <= 1
    assert rows[0]["name"].startswith("kwmlp-") and rows[0]["grid"] == "faster"
    md = (out / "scores.md").read_text()
    assert "| esc10_tiny | kwmlp-" in md and "| fsd50k_tiny | kwmlp-" in md
    assert (out / "logs" / f"{rows[0]['name']}.esc10_tiny.predictions.log").is_file()
    again = _python(argv)                                  # everything reused, quickly
    assert again.returncode == 0 and again.stdout.count("embeddings reused") == 2
    assert again.stdout.count("(predictions reused)") == 2
    assert scores.collect(out / "embeddings") == rows
