"""bench/gpu_check.sh: one table, every row present; a tiny version of each runs on the CPU."""

import os
import re
import subprocess

import pytest

from tests.recipe_helpers import REPO

ROWS = ["train fp32", "train bf16", "real-speech training", "DDP, 1 process", "dmha embed",
        "ONNX Runtime"]


def table(stdout):
    """``{check: (status, detail)}`` of the printed Markdown table."""
    rows = [line.strip("|").split(" | ") for line in stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| check ")]
    return {check.strip(): (status.strip(), detail.strip()) for check, status, detail in rows}


def run_check(*args, **env):
    result = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), *args],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, **env))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return table(result.stdout)


def test_without_cuda_every_row_says_skipped_no_gpu():
    rows = run_check(CUDA_VISIBLE_DEVICES="")
    assert list(rows) == ROWS
    assert {status for status, _ in rows.values()} == {"skipped: no GPU"}


@pytest.mark.slow
def test_the_cpu_part_runs_every_row(shared_data):
    rows = run_check("--cpu", DMHA_DATA=str(shared_data))
    assert list(rows) == ROWS
    assert all(status == "ok" for status, _ in rows.values()), rows
    assert "gloo" in rows["DDP, 1 process"][1]
    first, last = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)",
                                       rows["real-speech training"][1]).groups())
    assert last < first
    for row in ("dmha embed", "ONNX Runtime"):
        assert float(re.search(r"worst cosine to [^\d]*([\d.]+)", rows[row][1]).group(1)) > 0.999
