"""benchmarks.gpu_check, the device check of issue 16, as a CPU dry run at small sizes on a
machine made to look like the device's (no faiss): every figure is measured or says why not."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {"machine", "front_end", "matmul_floor", "bow_encoders", "kwmlp", "embed",
           "codebook_fit", "assignment", "ae_training", "heads", "audiomlp"}


def test_embedding_imports_without_faiss():
    code = ("import sys; sys.modules['faiss'] = None\n"
            "import bow.bagofwords.embed, bow.kwmlp.embed, bow.hear.bow, pipelines.embed\n"
            "from bow.bagofwords.codebook import Codebook\n"
            "try:\n    Codebook().fit([[0.0]] * 300)\nexcept ImportError:\n    print('lazy')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "lazy"


@pytest.mark.slow
def test_cpu_dry_run_without_faiss():
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--device", "cpu",
                          "--small", "--no-faiss", "--budget", "300"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert FIGURES <= {r["figure"] for r in rows}
    failed = [r for r in rows if "failed" in str(r.get("skipped", ""))]
    assert not failed, failed
    by = {(r["figure"], r.get("model")): r for r in rows}
    for model in ("bow_paper", "bow_default", "kwmlp"):
        row = by[("embed", model)]
        assert row["clips"] > 0 and row["skipped"] == 0 and row["fsd50k_pass_h"] > 0
    fits = [r for r in rows if r["figure"] == "codebook_fit"]
    assert len(fits) == 3 and all("torch Lloyd fallback" in r["how"] for r in fits)
    assert all(r["device_agrees_with_exact"] > 0.9 for r in rows if r["figure"] == "assignment")
    assert by[("bow_encoders", None)]["of_floor"] > 0 and by[("kwmlp", None)]["of_floor"] > 0
    assert "audio_s_per_s" in out.stdout.split("\n\n", 1)[1]          # the tables follow
