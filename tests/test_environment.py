"""The environment check (bow.environment, pipelines.doctor) and torchaudio's failure mode."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from bow.environment import DependencyError, checks, torchaudio, version
from tests.conftest import IN_CI, sine

ROOT = Path(__file__).resolve().parents[1]
BROKEN = "undefined symbol: torch_exception_get_what_without_backtrace"


def _run(args, pythonpath: Path | None = None, cwd=ROOT):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath or ""), str(ROOT),
                                                    env.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _fake_torchaudio(root: Path, ver: str = "9.9.1") -> Path:
    """A torchaudio package whose import fails as a wheel built for another torch does."""
    (root / "torchaudio").mkdir(parents=True)
    (root / "torchaudio" / "__init__.py").write_text(
        f"raise OSError('{root}/torchaudio/lib/libtorchaudio.so: {BROKEN}')\n")
    info = root / f"torchaudio-{ver}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchaudio\nVersion: {ver}\n")
    return root


def test_every_required_check_passes_in_this_environment():
    found = checks()
    names = [c.name for c in found]
    for name in ("python", "torch", "torchaudio", "faiss", "numpy", "h5py", "soundfile", "cpu"):
        assert name in names
    broken = [c for c in found if c.required and not c.ok]
    assert not broken, broken
    sound = next(c for c in found if c.name == "soundfile")
    assert "FLAC" in sound.detail and "WAV" in sound.detail


def test_doctor_prints_one_line_a_check_and_exits_0():
    out = _run(["-m", "pipelines.doctor"])
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("bow ") and lines[-1] == "doctor: ready"
    assert len(lines) == len(checks()) + 2
    assert any(line.startswith("ok   torchaudio") for line in lines)


def test_a_broken_torchaudio_is_named_by_the_doctor_and_by_the_stages(tmp_path):
    fake = _fake_torchaudio(tmp_path / "site")
    doctor = _run(["-m", "pipelines.doctor"], fake)
    assert doctor.returncode == 1
    line = next(x for x in doctor.stdout.splitlines() if "torchaudio" in x)
    assert line.startswith("FAIL") and "torchaudio 9.9.1" in line
    assert f"torch {torch.__version__}" in line and BROKEN in line
    assert doctor.stdout.splitlines()[-1] == "doctor: the main job cannot run here"
    # a stage: one line naming both versions and the check, no traceback from inside torch
    data = tmp_path / "data"
    (data / "audio").mkdir(parents=True)
    rows = ["fname,labels,split"]
    for i, split in enumerate(("train", "train", "val")):
        sf.write(data / "audio" / f"{i}.wav", sine(440.0 * (i + 1), 1.5), 16000)
        rows.append(f"{i}.wav,tone,{split}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    stage = _run(["-m", "pipelines.train_autoencoders", "--data", str(data), "--artifacts",
                  str(tmp_path / "art"), "--no-progress"], fake)
    assert stage.returncode == 1 and "Traceback" not in stage.stderr, stage.stderr
    error = stage.stderr.strip().splitlines()[-1]
    assert error.startswith("train_autoencoders: error: torchaudio 9.9.1 cannot load its "
                            f"compiled library with torch {torch.__version__}")
    assert "python -m pipelines.doctor" in error


def test_torchaudio_gives_the_module_here():
    ta = torchaudio()
    assert ta.functional.melscale_fbanks(257, 0.0, 8000.0, 40, 16000).shape == (257, 40)
    assert issubclass(DependencyError, ImportError)


@pytest.mark.slow
def test_the_real_broken_pair_is_named(tmp_path):
    """torchaudio 2.11.1's wheel (declares torch>=2.11) beside torch 2.11.0, as a resolver
    paired them: the check names the pair and the missing symbol."""
    if not torch.__version__.startswith("2.11.0"):
        pytest.skip(f"the broken pair is torchaudio 2.11.1 with torch 2.11.0, not "
                    f"{torch.__version__}")
    target = tmp_path / "site"
    get = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                          "--no-cache-dir", "--target", str(target), "torchaudio==2.11.1"],
                         capture_output=True, text=True, timeout=600)
    if get.returncode:
        message = f"could not fetch torchaudio 2.11.1 from the package index: {get.stderr}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    doctor = _run(["-m", "pipelines.doctor"], target)
    line = next(x for x in doctor.stdout.splitlines() if "torchaudio" in x)
    assert doctor.returncode == 1 and line.startswith("FAIL torchaudio      torchaudio 2.11.1")
    assert BROKEN in line and f"torch {torch.__version__}" in line
    assert version("torchaudio") == "2.11.0"          # the environment's own pair is untouched
