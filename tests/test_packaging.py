"""The distribution users install: ``python -m build`` -> sdist and wheel of bow-audio, and the
wheel alone (outside the checkout) runs the doctor, the main job and the HEAR modules."""
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from bow import __version__
from bow.data.datasets import load_dataset
from tests.conftest import linked_dataset

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "train", "train", "val", "eval")   # by ESC-10 fold 1..5


def _run(args, env, cwd, timeout=900):
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{args}: {out.stdout[-3000:]}{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], dict(os.environ),
         ROOT)
    return out


@pytest.mark.slow
def test_build_makes_an_sdist_and_a_wheel_of_this_version(dist):
    wheel, = dist.glob("*.whl")
    sdist, = dist.glob("*.tar.gz")
    assert wheel.name == f"bow_audio-{__version__}-py3-none-any.whl"
    assert sdist.name == f"bow_audio-{__version__}.tar.gz"
    names = zipfile.ZipFile(wheel).namelist()
    assert "bow/hear/tfstub/tensorflow/__init__.py" in names
    assert "pipelines/doctor.py" in names and "bow/environment.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    inside = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    assert {"CHANGELOG.md", "README.md", "requirements/lock.txt", "pyproject.toml"} <= inside


@pytest.mark.slow
def test_the_wheel_alone_runs_the_doctor_the_main_job_and_the_hear_modules(
        dist, tmp_path, esc10_dir, kwmlp_dir, audiomlp_dir):
    wheel, = dist.glob("*.whl")
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
          "--target", str(site), str(wheel)], dict(os.environ), tmp_path)
    work = tmp_path / "work"          # no checkout here: only the wheel's files import
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), MPLBACKEND="Agg")
    py = [sys.executable, "-P"]       # -P: the working folder is not on sys.path either
    where = _run(py + ["-c", "import bow, bow.hear.bow, bow.hear.kwmlp, bow.hear.audiomlp, "
                             "bow.hear.tfstub as t, pipelines.run; "
                             "print(bow.__file__, bow.__version__, t.PATH)"], env, work)
    file, version, stub = where.split()
    assert Path(file).is_relative_to(site) and version == __version__
    assert (Path(stub) / "tensorflow" / "__init__.py").is_file()
    assert _run(py + ["-m", "pipelines.doctor"], env, work).rstrip().endswith("doctor: ready")
    # the main job on 40 real clips, with the authors' checkpoints (no pretraining)
    clips = [c for c in load_dataset(esc10_dir).clips if c.labels[0] in ("dog", "rain")][::2]
    data = linked_dataset(tmp_path / "data", clips, lambda k, c: SPLITS[int(c.split) - 1])
    out = _run(py + ["-m", "pipelines.run", "--data", str(data), "--artifacts", "art",
                     "--preset", "quick", "--no-sweeps", "--no-progress",
                     "--kwmlp-checkpoint", str(kwmlp_dir / "kwmlp.pth"),
                     "--audiomlp-checkpoint", str(audiomlp_dir / "audiomae.pth")], env, work)
    assert (work / "art" / "reports" / "default" / "report.md").is_file(), out
    # the validator on the wheel's HEAR module, with the wheel's tensorflow stand-in
    validator = shutil.which("hear-validator")
    if validator:
        env["PYTHONPATH"] = os.pathsep.join([str(site), stub])
        _run([validator, "bow.hear.kwmlp", "--model", str(kwmlp_dir / "kwmlp.pth"),
              "--device", "cpu"], env, work)
