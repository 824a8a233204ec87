"""The HEAR 2021 evaluation kit (heareval 2021.1.3) on a HEAR API module: its two programs, run
in subprocesses with what they need and nothing more.

For one model (a module and its model file) and one task folder (bow.data.hear_task):

1. ``embed``: ``python -m heareval.embeddings.runner MODULE --model M --tasks-dir PARENT --task
   TASK --embeddings-dir ROOT``. The kit writes ``ROOT/<module>/<task>/`` (embeddings and labels
   per split, ``profile.embeddings.json``, ``.done.embeddings``). ROOT is one folder per model
   (``claim``): the kit names its folder after the module only and skips a task whose folder
   has ``.done.embeddings``, so two bundles of bow.hear.bow under one ROOT would silently share
   the first one's embeddings. Reused while the task folder (its JSON and CSV files, the audio
   files' names and sizes) is unchanged; recomputed otherwise.
2. ``predict``: ``python -m heareval.predictions.runner ROOT/<module>/<task> --grid G
   --grid-points N``: the kit trains its downstream MLPs (N random points of grid G, chosen on
   the task's FIRST metric on the validation split, or the next fold) and writes
   ``test.predicted-scores.json``. Reused while the embeddings and the grid are unchanged (the
   kit's own marker, prediction-done.json, does not record the grid: a rerun with another grid
   would be skipped by the kit, so its outputs are deleted first).

Both record what they did, with wall times and the machine's load, in ``MARKER`` in the kit's
task folder (bow.hear.scores reads it with the kit's scores).

Environments (``kit_env``):

* the embeddings runner gets the tensorflow stand-in (bow.hear.tfstub) on its PYTHONPATH; the
  predictions runner does not import tensorflow;
* ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the predictions runner ONLY. torch >= 2.6 loads
  with weights_only=True by default, which refuses the checkpoints the kit has just written
  itself (task_predictions.py:1050 ``torch.load`` and pytorch-lightning's ``trainer.test(
  ckpt_path=...)``: they hold pickled hyper-parameters), so the kit would fail after training.
  That process loads nothing else. The embeddings runner, which loads the model file through
  the module, keeps torch's safe default (and bow's modules pass weights_only=True, which the
  variable cannot override). The opposite variable, TORCH_FORCE_WEIGHTS_ONLY_LOAD, is removed
  there: torch raises when both are set;
* ``threads`` OpenMP/MKL threads; ``device="cpu"`` hides CUDA devices (CUDA_VISIBLE_DEVICES="");
* the folder holding this bow package first on PYTHONPATH: the kit imports the same bow.

Paths given to the kit are absolute (with a relative embeddings folder its CSVLogger writes
outside it). GPU (not measured here, no GPU was available): the kit uses the first GPU when
torch sees one (embeddings on cuda, predictions with --gpus [0]); heareval/gpu_max_mem.py then
imports pynvml and calls ``nvmlDeviceGetName(h).decode()``, which fails with nvidia-ml-py
>= 11.515 (it returns str there): the ``hear`` extra pins nvidia-ml-py<11.515, and
``check_kit`` refuses a newer one when CUDA is visible.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bow.hear import tfstub
from bow.io.stage import InputError, file_digest, read_json, write_json

KIT_VERSION = "2021.1.3"
GRIDS = ("default", "fast", "faster")
MARKER = "bow_hear_eval.json"     # in the kit's task folder: what was run, how long
MODEL = "model.json"              # in ROOT: the model whose embeddings ROOT holds
KIT_PINS = "heareval==2021.1.3 sed_eval==0.2.1 dcase_util==0.2.20 librosa==0.11.0"
INSTALL = f"""\
Install the HEAR evaluation kit in {{python}} (Python 3.11, torch 2.11), without tensorflow:

    pip install "{{source}}[hear]"
    pip install --no-deps {KIT_PINS}

(--no-deps: the kit's own pins, numpy==1.19.2, numba==0.48 and tensorflow, cannot install
there and are not needed: bow gives the kit a tensorflow stand-in.)"""
# What the two runners import (the kit's requirements, less tensorflow, numba and the unused)
KIT_IMPORTS = ("heareval", "pytorch_lightning", "torchinfo", "sed_eval", "dcase_util", "librosa",
               "lazy_loader", "past", "six", "validators", "intervaltree", "more_itertools",
               "slugify", "pandas", "click", "pkg_resources")
PIP_NAMES = {"pkg_resources": "setuptools<82", "past": "future", "slugify": "python-slugify",
             "more_itertools": "more-itertools", "pytorch_lightning": "pytorch-lightning<2"}
_CHECK = f"""\
import importlib.metadata as m, importlib.util as u, os, sys
missing = [n for n in {KIT_IMPORTS!r} if u.find_spec(n) is None]
if not missing and os.environ.get("CUDA_VISIBLE_DEVICES") != "" and \
        os.path.exists("/dev/nvidiactl"):      # importing torch costs seconds: only on CUDA
    import torch
    if torch.cuda.is_available():
        if u.find_spec("pynvml") is None:
            missing.append("pynvml (nvidia-ml-py<11.515)")
        else:
            try:
                v = m.version("nvidia-ml-py")
            except m.PackageNotFoundError:
                v = "0"
            if tuple(int(x) for x in v.split(".")[:2] if x.isdigit()) >= (11, 515):
                missing.append("nvidia-ml-py<11.515 (found " + v + ")")
sys.stdout.write("MISSING " + ", ".join(missing) if missing else m.version("heareval"))
sys.exit(3 if missing else 0)
"""


class KitError(RuntimeError):
    """The kit is missing or one of its programs failed; the message says what to install or
    where the program's output is."""


def install_help(python: str) -> str:
    """INSTALL for ``python``, naming this checkout when bow runs from one (else the
    distribution, bow-audio)."""
    root = bow_root()
    source = str(root) if (root / "pyproject.toml").is_file() else "bow-audio"
    return INSTALL.format(python=python, source=source)


def bow_root() -> Path:
    """The folder that holds the bow package (first on the kit's PYTHONPATH)."""
    return Path(tfstub.__file__).resolve().parents[3]


def kit_env(threads: int | None = 1, stand_in: bool = False, unsafe_load: bool = False,
            device: str = "auto") -> dict[str, str]:
    """The environment of a kit process (module docstring); ``threads`` None leaves the
    thread counts as they are (torch's default: every core)."""
    paths = ([str(tfstub.PATH)] if stand_in else []) + [str(bow_root())]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        paths + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    if unsafe_load:
        env.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def check_kit(python: str = sys.executable, device: str = "auto") -> str:
    """The kit's version in ``python``; KitError with INSTALL when something it imports is
    missing (found without importing the kit: that takes ~10 s)."""
    try:
        done = subprocess.run([python, "-c", _CHECK], env=kit_env(1, True, False, device),
                              capture_output=True, text=True, timeout=600)
    except OSError as e:
        raise KitError(f"{python}: cannot run this interpreter ({e})") from None
    if done.returncode != 0:
        if done.returncode == 3:
            names = done.stdout.strip().removeprefix("MISSING ").split(", ")
            why = "missing " + ", ".join(PIP_NAMES.get(n, n) for n in names)
        else:
            why = (done.stderr.strip().splitlines() or ["it failed"])[-1]
        raise KitError(f"the HEAR evaluation kit cannot run: {why}\n\n" + install_help(python))
    return done.stdout.strip()


def model_identity(module: str, model: Path | None, options: str = "{}") -> dict:
    """What identifies a model: module, model file (resolved) and SHA-256, load options."""
    path = Path(model).resolve() if model else None
    return {"module": module, "model": str(path or ""),
            "sha256": file_digest(path) if path else "", "model_options": options}


def default_name(identity: dict) -> str:
    """``<model file stem>-<8 hex digits of its SHA-256>``; the module's last part without one."""
    if identity["model"]:
        return f"{Path(identity['model']).stem}-{identity['sha256'][:8]}"
    return identity["module"].rsplit(".", 1)[-1]


def claim(root: Path, identity: dict) -> None:
    """Make ``root`` the embeddings folder of this model; InputError if another's."""
    known = read_json(root / MODEL, "model record") if (root / MODEL).is_file() else None
    if known is not None and known != identity:
        raise InputError(f"{root} holds the embeddings of another model ({known['module']} "
                         f"{known['model'] or ''} {known['model_options']}); choose another "
                         "--name, or delete that folder")
    if known is None:
        write_json(root / MODEL, identity)


def task_fingerprint(task: Path) -> str:
    """SHA-256 of the task's JSON and CSV files and of its audio files' names and sizes."""
    h = hashlib.sha256()
    for p in sorted(task.glob("*.json")) + sorted(task.glob("*.csv")):
        if p.name not in ("export.json", "fingerprint.json", "config.json"):
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    for p in sorted(task.rglob("*.wav")):
        h.update(f"{p.relative_to(task)}:{p.stat().st_size}\0".encode())
    return h.hexdigest()


def _run(cmd: list[str], env: dict, cwd: Path, log: Path) -> tuple[float, float]:
    """Run ``cmd`` with its output in ``log``; (wall seconds, mean 1-min load average during
    the run); KitError with the log's last lines on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start, loads = time.time(), []
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n\n")
        f.flush()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            loads.append(os.getloadavg()[0])
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    seconds = time.time() - start
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        hint = ("\n" + install_help(cmd[0])) if "No module named" in tail else ""
        raise KitError(f"{cmd[2]} failed (exit status {proc.returncode}); the last lines of "
                       f"{log}:\n{tail.rstrip()}{hint}")
    return seconds, round(sum(loads) / max(1, len(loads)), 2)


def _record(emb: Path) -> dict:
    return read_json(emb / MARKER, "hear_eval record") if (emb / MARKER).is_file() else {}


def embed(task: Path, root: Path, identity: dict, log: Path, python: str = sys.executable,
          threads: int | None = 1, device: str = "auto") -> tuple[Path, bool]:
    """Run the kit's embeddings runner for ``task`` unless up to date; (the kit's folder for
    the task, whether it was reused)."""
    task, root = Path(task).resolve(), Path(root).resolve()
    stamp = {"task": str(task), "task_fingerprint": task_fingerprint(task)}
    for old in sorted(root.glob(f"*/{task.name}")):
        done = _record(old).get("embeddings", {})
        if (old / ".done.embeddings").is_file() and \
                {k: done.get(k) for k in stamp} == stamp:
            return old, True
        shutil.rmtree(old)                         # another task folder, or unfinished
    cmd = [python, "-m", "heareval.embeddings.runner", identity["module"], "--tasks-dir",
           str(task.parent), "--task", task.name, "--embeddings-dir", str(root)]
    cmd += ["--model", identity["model"]] if identity["model"] else []
    cmd += ["--model-options", identity["model_options"]] \
        if identity["model_options"] not in ("", "{}") else []
    seconds, load = _run(cmd, kit_env(threads, True, False, device), root, log)
    found = [d.parent for d in root.glob(f"*/{task.name}/.done.embeddings")]
    if len(found) != 1:
        raise KitError(f"expected one embeddings folder for {task.name} under {root}, found "
                       f"{found} (see {log})")
    write_json(found[0] / MARKER, {"name": root.name, **identity,
                                   "embeddings": dict(stamp, seconds=round(seconds, 1),
                                                      load=load, threads=threads)})
    return found[0], False


PREDICTIONS = ("prediction-done.json", "test.predicted-scores.json", "prediction.log")


def predict(emb: Path, log: Path, grid: str = "default", grid_points: int = 8,
            gpus: str | None = None, python: str = sys.executable, threads: int | None = 1,
            device: str = "auto") -> bool:
    """Run the kit's predictions runner on its embeddings folder ``emb`` unless done with this
    grid; return whether it was reused."""
    if grid not in GRIDS:
        raise InputError(f"grid must be one of {GRIDS}, got {grid!r}")
    emb = Path(emb).resolve()
    record = _record(emb)
    settings = {"grid": grid, "grid_points": grid_points, "gpus": gpus}
    done = record.get("predictions", {})
    if (emb / "test.predicted-scores.json").is_file() and \
            {k: done.get(k) for k in settings} == settings:
        return True
    for name in PREDICTIONS:
        (emb / name).unlink(missing_ok=True)
    for p in emb.glob("*.predictions.pkl"):
        p.unlink()
    shutil.rmtree(emb / "lightning_logs", ignore_errors=True)
    cmd = [python, "-m", "heareval.predictions.runner", str(emb), "--grid", grid,
           "--grid-points", str(grid_points)] + (["--gpus", gpus] if gpus else [])
    seconds, load = _run(cmd, kit_env(threads, False, True, device), emb.parent.parent, log)
    record["predictions"] = dict(settings, seconds=round(seconds, 1), load=load,
                                 threads=threads)
    write_json(emb / MARKER, record)
    return False
