"""Throughput of ``dmha embed`` and its peak memory on an hour of audio.

For the default model (VGG4L k=128, 8 heads) and the paper-size one (VGG4L
k=1024, 16 heads), with random weights (speed does not depend on them):
files per second of ``dmha embed`` over a folder of variable-length speech,
PyTorch vs ONNX Runtime, one file per batch vs length-bucketed batches; then
the peak resident memory of ``dmha embed`` on a 1-hour file against a 10-second
one (default model).

    python bench/bench_inference.py [--data DIR] [--models default,paper] [--max_files N]

DIR defaults to ``$DMHA_DATA/librispeech-test-other-10spk`` (DMHA_DATA
defaults to ../shared/data). Each timing is of the whole command (model
loading included) after a warm-up run, as a user would see it.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile
import torch

from dmha_modules.cli import main as dmha
from dmha_modules.folders.model_folder import write_model_folder
from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
from dmha_modules.nn.heads import Classifier
from dmha_modules.nn.models import EmbeddingModel

MODELS = {
    "default": dict(front_end="VGG4L", channels=128, heads=8),
    "paper": dict(front_end="VGG4L", channels=1024, heads=16),
}

# VmHWM is this process's own peak: ru_maxrss would carry the parent's over exec.
PEAK_RSS = """
import sys
from dmha_modules.cli import main
status = main(sys.argv[1:])
with open("/proc/self/status") as f:
    peak = [line for line in f if line.startswith("VmHWM:")][0].split()[1]
print(int(peak) / 1024, status)
"""


def make_model_folder(kind, folder):
    """A model folder of random weights of the given size, with embedding.onnx."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    kwargs = MODELS[kind]
    modules = {
        "compute_features": LogMelFeatures(),
        "mean_var_norm": UtteranceNorm(),
        "embedding_model": EmbeddingModel(**kwargs),
        "classifier": Classifier(400, n_classes=10, hidden_size=400),
    }
    encoder = CategoricalEncoder()
    encoder.update_from_iterable([str(i) for i in range(10)])
    write_model_folder(folder, modules, ("dmha_modules.nn.models.EmbeddingModel", kwargs),
                       encoder, 0.1 * torch.randn(48000), verification_threshold=0.5)
    assert dmha(["export", "--model", folder, "--onnx"]) == 0


def files_per_second(folder, list_file, count, out, batch_seconds, onnx):
    command = ["embed", "--model", folder, "--list", list_file, "--out", out,
               "--batch_seconds", str(batch_seconds), "--no_progress"]
    command += ["--onnx"] if onnx else []
    start = time.perf_counter()
    assert dmha(command) == 0
    return count / (time.perf_counter() - start)


def peak_memory_mb(folder, wav, out):
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, "embed", "--model", folder, "--out", out,
         "--no_progress", wav],
        capture_output=True, text=True, check=True,
    )
    return float(result.stdout.split()[-2])


def write_noise(path, seconds, rate=16000):
    """Quiet noise, written a minute at a time."""
    rng = np.random.default_rng(0)
    with soundfile.SoundFile(path, "w", rate, 1, "PCM_16") as f:
        for begin in range(0, int(seconds * rate), 60 * rate):
            f.write(0.05 * rng.standard_normal(min(60 * rate, int(seconds * rate) - begin)))


def main():
    data = os.environ.get("DMHA_DATA", os.path.join(os.path.dirname(__file__), "..", "..",
                                                    "shared", "data"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(data, "librispeech-test-other-10spk"))
    parser.add_argument("--models", default="default,paper")
    parser.add_argument("--max_files", type=int, default=None)
    args = parser.parse_args()

    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(args.data)
        for name in names
        if name.endswith((".flac", ".wav"))
    )[: args.max_files]
    seconds = sum(soundfile.info(path).duration for path in files)
    print(f"{len(files)} files, {seconds:.0f} s of audio ({seconds / len(files):.1f} s mean) "
          f"from {args.data}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as work:
        list_file = os.path.join(work, "files.lst")
        with open(list_file, "w") as f:
            f.write("".join(f"{path}\n" for path in files))
        out = os.path.join(work, "emb.npy")
        print("\n| model | backend | batches | files/s | x batch 1 |\n|---|---|---|---|---|")
        for kind in args.models.split(","):
            folder = os.path.join(work, kind)
            make_model_folder(kind, folder)
            files_per_second(folder, list_file, len(files), out, 0, False)  # warm-up
            for backend, onnx in (("PyTorch", False), ("ONNX Runtime", True)):
                single = files_per_second(folder, list_file, len(files), out, 0, onnx)
                bucketed = files_per_second(folder, list_file, len(files), out, 120, onnx)
                print(f"| {kind} | {backend} | 1 file | {single:.2f} | 1.00 |")
                print(f"| {kind} | {backend} | length-bucketed, 120 s | {bucketed:.2f} | "
                      f"{bucketed / single:.2f} |", flush=True)

        folder = os.path.join(work, "default")
        short, hour = os.path.join(work, "short.wav"), os.path.join(work, "hour.wav")
        write_noise(short, 10)
        write_noise(hour, 3600)
        base = peak_memory_mb(folder, short, out)
        start = time.perf_counter()
        long = peak_memory_mb(folder, hour, out)
        took = time.perf_counter() - start
        print(f"\nPeak RSS of dmha embed, default model: 10 s file {base:.0f} MB, "
              f"1-hour file {long:.0f} MB (+{long - base:.0f} MB; the waveform alone is "
              f"{3600 * 16000 * 4 / 2**20:.0f} MB as float32), {took:.0f} s")


if __name__ == "__main__":
    main()
