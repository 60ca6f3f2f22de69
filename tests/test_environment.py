"""The installed torch and torchaudio load together, and dmha says so when they do not.

The README's test command runs this file before the rest: a torchaudio built
for another torch fails the whole suite at collection otherwise, with a
linker error far from its cause.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.signal

from tests.conftest import REPO


def test_torchaudio_compiled_library_runs_an_op_with_this_torch():
    import torch
    import torchaudio
    import torchaudio.functional

    # The release numbers match: torchaudio X.Y.Z is built for torch X.Y.Z.
    assert torchaudio.__version__.split("+")[0] == torch.__version__.split("+")[0]
    # lfilter's recursion on CPU is an op of libtorchaudio, not Python.
    assert hasattr(torch.ops.torchaudio, "_lfilter_core_loop")
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(2000)
    b, a = [0.2, 0.3, 0.1], [1.0, -0.5, 0.25]
    filtered = torchaudio.functional.lfilter(
        torch.from_numpy(signal),
        torch.tensor(a, dtype=torch.float64),
        torch.tensor(b, dtype=torch.float64),
        clamp=False,
    )
    np.testing.assert_allclose(filtered.numpy(), scipy.signal.lfilter(b, a, signal), atol=1e-9)


@pytest.fixture
def mismatched_torchaudio(tmp_path):
    """A folder that, first on ``PYTHONPATH``, makes torchaudio 2.11.1 fail as it does beside torch 2.11.0."""
    package = tmp_path / "torchaudio"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """\
            raise OSError(
                "Could not load this library: /venv/torchaudio/lib/libtorchaudio.so\\n"
                "(undefined symbol: torch_exception_get_what_without_backtrace)"
            )
            """
        )
    )
    metadata = tmp_path / "torchaudio-2.11.1.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: torchaudio\nVersion: 2.11.1\n")
    return {**os.environ, "PYTHONPATH": str(tmp_path)}


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "dmha_modules.cli", "--help"],
        [sys.executable, "recipes/train.py", "hparams/age.yaml"],
    ],
    ids=["dmha", "recipe"],
)
@pytest.mark.slow
def test_a_torchaudio_built_for_another_torch_is_one_line(mismatched_torchaudio, command):
    import torch

    done = subprocess.run(
        command, cwd=REPO, env=mismatched_torchaudio, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "torchaudio 2.11.1" in lines[0]
    assert f"torch {torch.__version__.split('+')[0]}" in lines[0]
    assert "undefined symbol: torch_exception_get_what_without_backtrace" in lines[0]
    assert "pip install" in lines[0] and "constraints.txt" in lines[0]


def test_a_broken_pyav_is_one_line(tmp_path):
    # PyAV's wheel carries FFmpeg's libraries; one that does not load is said
    # in one line, not as a traceback of ``import av`` inside the audio reader.
    (tmp_path / "av").mkdir()
    (tmp_path / "av" / "__init__.py").write_text(
        'raise ImportError("libavcodec-1a2b3c.so.62: cannot open shared object file")\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "dmha_modules.cli", "--help"], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dmha: av does not load (")
    assert "libavcodec-1a2b3c.so.62" in lines[0] and "pip install" in lines[0]
