"""What the recipe tests share: tiny settings, running the recipe, voices, loading its model folder.

Imported by name (``from tests.recipe_helpers import ...``).
"""

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
# A model that trains a couple of batches in seconds on 2 CPU cores.
TINY = [
    "--channels=16",
    "--heads=4",
    "--emb_dim=32",
    "--max_batch_seconds=8",
    "--num_workers=0",
    "--crop_seconds=1.0",
    "--noprogressbar",
    # Four held-out speakers of 16 in valid and in test, so both have impostor trials.
    "--valid_ratio=0.25",
    "--test_ratio=0.25",
]


def write_voice(path, f0, rng, sample_rate=16000, seconds=None):
    """Writes a harmonic tone at ``f0`` Hz with a little noise, 1.2-1.8 s; returns ``path``."""
    seconds = rng.uniform(1.2, 1.8) if seconds is None else seconds
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wav = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 5)) * 0.1
    wav += 0.01 * rng.standard_normal(t.size)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wav.astype(np.float32), sample_rate)
    return path


def write_kaldi_corpus(root, ages):
    """A Kaldi data dir in ``root``: one speaker per age of ``ages``, 3 utterances of 1.2-1.8 s each."""
    rng = np.random.default_rng(0)
    scp, utt2spk, spk2age = [], [], []
    for s, age in enumerate(ages):
        spk = f"SPK{s:02d}"
        spk2age.append(f"{spk} {age}")
        for u in range(3):
            utt = f"{spk}_{u}"
            write_voice(root / "WAVE" / f"{utt}.flac", 300 - 5 * age + 10 * u, rng)
            scp.append(f"{utt} WAVE/{utt}.flac")
            utt2spk.append(f"{utt} {spk}")
    (root / "train").mkdir()
    for name, lines in [("wav.scp", scp), ("utt2spk", utt2spk), ("spk2age", spk2age)]:
        (root / "train" / name).write_text("\n".join(lines) + "\n")
    return root



def default_sigint():
    """``preexec_fn`` of a child the tests interrupt: SIGINT as a terminal delivers it.

    A shell that starts a job in the background (``cmd &``, CI runners, nohup)
    sets SIGINT to ignored, children inherit that, and Python then installs no
    KeyboardInterrupt handler: the test's SIGINT would do nothing.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def recipe_command(hparams, corpus, output, *extra):
    """The recipe on ``hparams/<hparams>`` with the tiny model, ``corpus`` and ``output``.

    The model is the original's VGG front-end (``--embedding=dmha``) unless
    ``extra`` names another ``--embedding``.
    """
    args = [
        sys.executable,
        str(REPO / "recipes" / "train.py"),
        str(REPO / "hparams" / hparams),
        f"--data_folder={corpus}",
        f"--output_folder={output}",
    ]
    if not any(arg.startswith("--embedding") for arg in extra):
        args.append("--embedding=dmha")
    return args + TINY + list(extra)


def run_recipe(command, expect=0, **kwargs):
    """Runs the recipe; asserts its exit status; returns the finished process."""
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=600, **kwargs
    )
    assert result.returncode == expect, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def logged_epochs(output):
    """Epoch numbers of the train log's validation lines, in order."""
    path = Path(output) / "train_log.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        int(line.split("epoch: ")[1].split(",")[0])
        for line in lines
        if line.startswith("epoch: ")
    ]


OFFLINE_LOAD = """
import socket, sys, torch
def refuse(*args, **kwargs):
    raise OSError("network access attempted")
socket.socket = socket.create_connection = refuse
from speechbrain.inference.classifiers import EncoderClassifier
model = EncoderClassifier.from_hparams(source=sys.argv[1], savedir=sys.argv[2])
wavs = torch.randn(2, 24000) * 0.1
print(tuple(model.encode_batch(wavs).shape))
print(",".join(model.classify_batch(wavs)[3]))
"""


def assert_encoder_classifier_loads_offline(folder, tmp_path, classes):
    """SpeechBrain's own EncoderClassifier loads the model folder with sockets disabled."""
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_LOAD, str(folder), str(tmp_path / "loaded")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shape, labels = result.stdout.splitlines()[-2:]
    assert shape.startswith("(2, 1,")
    assert set(labels.split(",")) <= set(classes)


def scored_trials(output):
    """``{(enrol, test)}`` of the recipe's ``test_scores.txt``."""
    lines = (Path(output) / "test_scores.txt").read_text().splitlines()
    return {tuple(line.split()[:2]) for line in lines}
