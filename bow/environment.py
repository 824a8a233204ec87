"""The environment bow runs in: what the main job needs, what speeds it up, what is optional.

``checks()`` returns one ``Check`` per item (``python -m pipelines.doctor`` prints them): the
versions of Python, torch, torchaudio, faiss, numpy, h5py and soundfile; whether torchaudio's
compiled library loads with this torch; the CPU features ``--precision bf16`` needs to pay
(AVX512-BF16 or AMX); the GPUs torch and faiss see; the formats libsndfile reads; the optional
HEAR kit, validator and openSMILE. A ``required`` check that fails means the main job cannot run.

Why the torchaudio check: torchaudio's PyPI wheels are compiled against one torch release, and
their metadata does not always say which. torchaudio 2.11.1 declares ``torch>=2.11`` but its
library needs ``torch_exception_get_what_without_backtrace``, which torch 2.11.0 lacks (torch
2.13 and 2.14 have it), so a resolver pairing them gives an ``OSError: undefined symbol`` at
``import torchaudio``. bow imports torchaudio through ``torchaudio()`` only, which turns that
failure into a ``DependencyError`` naming both versions and the fix.
"""
from __future__ import annotations

import importlib
import importlib.metadata as metadata
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

LOCK = "requirements/lock.txt"   # the tested set of versions (README: *Set-up*)
FIX = (f"install the tested pair: pip install -c {LOCK} torch torchaudio (in a checkout; "
       "else pip install \"torch==2.11.0\" \"torchaudio==2.11.0\")")


class DependencyError(ImportError):
    """A package bow needs is missing or cannot load; the message names it and the fix."""


@dataclass(frozen=True)
class Check:
    """One line of the environment check. ``ok``: True, False (broken) or None (absent and
    optional, or only informative)."""
    name: str
    ok: bool | None
    detail: str
    required: bool = False


def version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _first_line(error: BaseException) -> str:
    """The first line of the innermost cause (e.g. the loader's "undefined symbol: ...")."""
    while error.__cause__ or error.__context__:
        error = error.__cause__ or error.__context__
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def torchaudio():
    """The torchaudio module (with ``functional`` and ``transforms`` loaded); DependencyError
    naming torch's and torchaudio's versions when its compiled library does not load."""
    try:
        module = importlib.import_module("torchaudio")
        importlib.import_module("torchaudio.functional")
        importlib.import_module("torchaudio.transforms")
        return module
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name == "torchaudio":
            raise DependencyError(f"torchaudio is not installed (torch {torch.__version__}); "
                                  f"{FIX}") from None
        problem = e
    except OSError as e:
        problem = e
    raise DependencyError(
        f"torchaudio {version('torchaudio')} cannot load its compiled library with torch "
        f"{torch.__version__} ({_first_line(problem)}): the two were built for different "
        f"releases; {FIX}; python -m pipelines.doctor checks the environment") from None


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu() -> Check:
    flags = _cpu_flags()
    found = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    fast_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    capability = torch.backends.cpu.get_cpu_capability()
    verdict = "--precision bf16 pays here" if fast_bf16 else \
        "no AVX512-BF16/AMX: keep --precision fp32" if flags else "flags unknown"
    return Check("cpu", None, f"{platform.machine()}, torch kernels {capability}, "
                              f"{' '.join(found) or 'none of avx2/avx512'}: {verdict}")


def _torch() -> list[Check]:
    cuda = torch.version.cuda
    out = [Check("torch", True, f"{torch.__version__} ({'CUDA ' + cuda if cuda else 'CPU'} "
                                f"build), {torch.get_num_threads()} threads", True)]
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(n))
    out.append(Check("gpu (torch)", None, f"{n} CUDA device(s)" + (f": {names}" if n else "")))
    return out


def _torchaudio() -> Check:
    try:
        ta = torchaudio()
    except DependencyError as e:
        return Check("torchaudio", False, str(e), True)
    fb = ta.functional.melscale_fbanks(1025, 0.0, 8000.0, 96, 16000, norm=None, mel_scale="htk")
    ok = fb.shape == (1025, 96) and bool(torch.isfinite(fb).all())
    return Check("torchaudio", ok, f"{version('torchaudio')}, compiled library loads with torch "
                                   f"{torch.__version__}; mel filterbank "
                                   f"{'ok' if ok else 'WRONG'}", True)


def _faiss() -> list[Check]:
    try:
        import faiss
    except ImportError as e:
        return [Check("faiss", False, f"cannot import faiss ({_first_line(e)}): pip install "
                                      "faiss-gpu (Linux x86-64) or faiss-cpu", True)]
    dist = next((d for d in ("faiss-gpu", "faiss-cpu") if version(d)), "source build")
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return [Check("faiss", True, f"{faiss.__version__} ({dist})", True),
            Check("gpu (faiss)", None, f"{gpus} GPU(s): k-means runs on "
                                       f"{'the GPU' if gpus else 'the CPU'}")]


def _plain(module: str, dist: str | None = None) -> Check:
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        return Check(module, False, f"cannot import ({_first_line(e)})", True)
    return Check(module, True, getattr(mod, "__version__", None) or version(dist or module)
                 or "?", True)


def _soundfile() -> Check:
    try:
        import soundfile as sf
    except (ImportError, OSError) as e:
        return Check("soundfile", False, f"cannot load libsndfile ({_first_line(e)})", True)
    formats = sorted(sf.available_formats())
    needed = {"WAV", "FLAC"} - set(formats)
    detail = f"{sf.__version__}, libsndfile {sf.__libsndfile_version__}: {' '.join(formats)}"
    return Check("soundfile", not needed,
                 detail + (f"; MISSING {sorted(needed)}" if needed else ""), True)


def _optional(name: str, dist: str, hint: str) -> Check:
    found = version(dist)
    return Check(name, True if found else None,
                 f"{found}" if found else f"not installed (optional: {hint})")


def checks() -> list[Check]:
    """Every check of the module docstring, in the order ``pipelines.doctor`` prints them."""
    py = sys.version_info
    return [Check("python", py >= (3, 11), f"{platform.python_version()} "
                                           f"({sys.executable})", True),
            *_torch(), _torchaudio(), *_faiss(), _plain("numpy"), _plain("h5py"),
            _soundfile(), _cpu(),
            _optional("hear kit", "heareval", "README, HEAR 2021 API"),
            _optional("hear validator", "hearvalidator", "README, HEAR 2021 API"),
            _optional("opensmile", "opensmile", 'pip install "bow-audio[opensmile]", research '
                                                "use only")]
