"""What the command tests share: the tiny models' settings, audio, and running ``dmha``.

The references share no code path with what they check: audio is read by
soundfile and resampled by torchaudio here; embeddings come from
SpeechBrain's own ``EncoderClassifier``, one file at a time (exact for a
batch of one). The model folders (``conftest.py``) are tiny random models,
written once per session.
"""

import contextlib
import os
import re
import subprocess

import numpy as np
import pytest
import soundfile
import torch
import torch.nn.functional as F
import torchaudio

from dmha_modules import cli

KWARGS = dict(channels=16, heads=4, emb_dim=32)
EMB = KWARGS["emb_dim"]
AGE_GROUPS = ["child", "teens", "twenties", "thirties+"]
GROUP_CENTRES = [9.5, 16.0, 24.5, 37.0]
SPEAKER_THRESHOLD = 0.5
AM_SCALE = 30.0
# Good files of the session's audio folder: (rate, seconds, f0, channels, format/subtype).
AUDIO = {
    "spk1/a.wav": (16000, 2.0, 120, 1, "PCM_16"),
    "spk1/b.flac": (16000, 1.3, 125, 1, "PCM_16"),
    "spk2/c.wav": (8000, 1.7, 210, 1, "PCM_16"),
    "spk2/d.wav": (44100, 0.9, 220, 2, "PCM_16"),
    "spk3/e.wav": (48000, 3.1, 160, 1, "FLOAT"),
    "spk3/f.wav": (16000, 0.6, 170, 1, "FLOAT"),
}


def reference_wav(path, rate=16000):
    """The file as a model takes it, computed here: channel mean, torchaudio resampling."""
    audio, file_rate = soundfile.read(path, dtype="float32", always_2d=True)
    wav = torch.from_numpy(audio.mean(axis=1))
    if file_rate != rate:
        wav = torchaudio.functional.resample(wav, file_rate, rate)
    return wav


# SpeechBrain's modules in the model folders' hyperparams.yaml before the waveform embedding
# model (dmha's main of 2026-12-08 and earlier): the YAML's modules of the same names.
OLD_MODULES = "".join(f"    {name}: !ref <{name}>\n" for name in
                      ("compute_features", "mean_var_norm", "embedding_model"))


def without_waveform_model(text):
    """A model folder's ``hyperparams.yaml`` ``text`` as written before the waveform model.

    The ``waveform_embedding_model`` and ``pass_through`` entries (and their comment)
    go, and SpeechBrain's ``modules`` name the features, normalisation and
    embedding model themselves (``OLD_MODULES``), as in every earlier layout.
    """
    wrapper = re.compile(r"# SpeechBrain's encode_batch.*\n(#.*\n)*waveform_embedding_model: .*\n"
                         r"(    .*\n)+pass_through: .*\n")
    new_modules = ("    compute_features: !ref <pass_through>\n"
                   "    mean_var_norm: !ref <pass_through>\n"
                   "    embedding_model: !ref <waveform_embedding_model>\n")
    assert wrapper.search(text) and new_modules in text  # the layout being rewritten
    text = wrapper.sub("", text).replace(new_modules, OLD_MODULES)
    assert "waveform" not in text and "pass_through" not in text
    return text


def run_cli(capsys, *args):
    """``dmha args`` in this process: (exit status, stdout, stderr)."""
    status = cli.main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return status, out, err


def cosine(a, b):
    return float(F.cosine_similarity(torch.as_tensor(a), torch.as_tensor(b), dim=0))


def assert_embeddings_equal(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@contextlib.contextmanager
def read_only_folder(path):
    """A folder no one can create files in, root included (``chattr +i``); skips if none.

    Permission bits do not stop root, so as root the folder is also made
    immutable for the block.
    """
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    immutable = os.geteuid() == 0 and subprocess.run(
        ["chattr", "+i", str(path)], capture_output=True).returncode == 0
    try:
        try:
            (path / "probe").touch()
        except OSError:
            yield path
        else:
            (path / "probe").unlink()
            pytest.skip(f"cannot make {path} read-only here (root without chattr +i)")
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)
