"""benchmarks.scale's measurements and verdicts: peak memory counts the workers a stage starts;
exponents and the 10k -> 100k targets from known numbers."""
import json
import sys

import pytest

from benchmarks import scale

CHILD = """
import subprocess, sys, time
code = "import numpy as np, time; a = np.ones(MB * 2**20 // 8); time.sleep(1.5)"
procs = [subprocess.Popen([sys.executable, "-c", code.replace("MB", "150")]) for _ in range(2)]
[p.wait() for p in procs]
"""


def test_peak_memory_sums_the_process_tree(tmp_path):
    seconds, peak = scale.measure([sys.executable, "-c", CHILD], tmp_path / "log.txt")
    assert seconds >= 1.5
    assert peak > 300                       # two workers of 150 MiB each, at the same time


def test_a_failing_stage_command_names_its_log(tmp_path):
    with pytest.raises(RuntimeError, match="log.txt"):
        scale.measure([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log.txt")


def test_exponents_and_targets(tmp_path, capsys):
    rows = []
    for n in (1_000, 10_000, 100_000):
        rows += [{"clips": n, "audio_s": 1.5 * n, "stage": "embed", "seconds": 0.01 * n,
                  "peak_rss_mib": 1000.0},                       # linear time, flat memory
                 {"clips": n, "audio_s": 1.5 * n, "stage": "evaluate",
                  "seconds": 1e-6 * n ** 1.5, "peak_rss_mib": 500 + n / 100}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    failed = scale.report(tmp_path, tmp_path / "scale.png")
    assert failed == ["evaluate"]
    out = capsys.readouterr().out
    assert "embed                     1.00      0.00   1.00x, 1.00x  PASS" in out
    assert "evaluate                  1.50" in out and "FAIL" in out
    assert "train_autoencoders" in out and "not measured" in out
    assert (tmp_path / "scale.png").stat().st_size > 0


def test_evaluate_runs_streaming_for_a_fixed_number_of_epochs(tmp_path):
    from argparse import Namespace
    args = Namespace(sample_chunks=8192, jobs=2, memory_budget_mb=256.0, epochs=10)
    cmd = scale.stage_command("evaluate", tmp_path / "data", tmp_path / "art", args)
    assert cmd[cmd.index("--memory-budget-mb") + 1] == "256.0"
    assert cmd[cmd.index("--max-epochs") + 1] == cmd[cmd.index("--patience") + 1] == "10"
    args.epochs = 0                                    # evaluate's own defaults
    assert "--max-epochs" not in scale.stage_command("evaluate", tmp_path, tmp_path, args)
