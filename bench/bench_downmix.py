"""Peak memory of reading a long multichannel file: block-wise down-mix vs the whole file.

    python bench/bench_downmix.py                  # 20 minutes at 96 kHz, 6 channels
    python bench/bench_downmix.py --minutes 5

Writes a 16-bit WAV of seeded noise, then reads it in fresh processes, each
reporting its own peak resident memory above what its imports took:

- ``whole file``: ``soundfile.read`` of every channel as float32, then the mean
  (how ``dmha_modules.io.audio.read_audio`` read multichannel audio before);
- ``read_audio``: the block-wise down-mix of :func:`dmha_modules.io.audio.read_audio`;
- ``mono file``: the same duration as one channel, read whole (the floor).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy
import soundfile

READERS = {
    "whole file": "soundfile.read(path, dtype='float32', always_2d=True)[0].mean(axis=1)",
    "read_audio": "read_audio(path)[0]",
    "mono file": "soundfile.read(path, dtype='float32')[0]",
}
MEASURE = """
import resource, sys, soundfile
from dmha_modules.io.audio import read_audio
path = sys.argv[1]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wav = {reader}
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, len(wav))
"""


def write_noise(path, seconds, rate, channels):
    """A 16-bit WAV of quiet noise, written a minute at a time."""
    rng = numpy.random.default_rng(0)
    with soundfile.SoundFile(path, "w", rate, channels, "PCM_16") as out:
        for start in range(0, seconds, 60):
            frames = min(60, seconds - start) * rate
            out.write((0.05 * rng.standard_normal((frames, channels))).astype(numpy.float32))


def peak(reader, path):
    """Bytes of peak memory above the imports, and the samples read, in a fresh process."""
    result = subprocess.run([sys.executable, "-c", MEASURE.format(reader=READERS[reader]), path],
                            capture_output=True, text=True, check=True)
    grown, samples = result.stdout.split()
    return int(grown), int(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=20)
    parser.add_argument("--rate", type=int, default=96000)
    parser.add_argument("--channels", type=int, default=6)
    args = parser.parse_args()
    seconds = 60 * args.minutes
    with tempfile.TemporaryDirectory() as folder:
        many, mono = os.path.join(folder, "many.wav"), os.path.join(folder, "mono.wav")
        write_noise(many, seconds, args.rate, args.channels)
        write_noise(mono, seconds, args.rate, 1)
        print(f"{args.minutes} min at {args.rate} Hz, {args.channels} channels "
              f"({os.path.getsize(many) / 1e9:.2f} GB on disk); mono float32 is "
              f"{seconds * args.rate * 4 / 1e9:.2f} GB")
        print("| reader | peak memory above imports |\n|---|---:|")
        for reader in READERS:
            grown, samples = peak(reader, mono if reader == "mono file" else many)
            assert samples == seconds * args.rate
            print(f"| {reader} | {grown / 1e9:.2f} GB |")


if __name__ == "__main__":
    main()
