"""Embedding-extraction speed on this CPU, against the machine's own fp32 matmul peak.

For the paper-size model (VGG4L k=1024, double MHA with 16 heads) and the small
model the CPU recipes default to (VGG4L k=128, double MHA with 8 heads), prints:
milliseconds per 3 s utterance (waveform to embedding, eval mode) at batch 1
and 16, GFLOP per utterance (counted by ``torch.utils.flop_counter``), and the
achieved GFLOP/s as a fraction of the fp32 matmul peak measured in the same run.

Usage: ``python bench/bench_embedder.py [--repeats 3]``
"""

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dmha_modules.features import LogMelFeatures, UtteranceNorm
from dmha_modules.models import EmbeddingModel
from dmha_modules.runtime import keep_freed_memory

MODELS = {
    "paper (VGG4L k=1024, DMHA 16 heads)": dict(
        front_end="VGG4L", channels=1024, heads=16
    ),
    "small (VGG4L k=128, DMHA 8 heads)": dict(front_end="VGG4L", channels=128, heads=8),
}
SAMPLE_RATE = 16000
SECONDS = 3.0


def best_seconds(fn, repeats):
    """Best wall-clock time of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak_gflops(repeats):
    """The machine's fp32 matmul peak: best GFLOP/s of square products into a preallocated output."""
    best = 0.0
    for size in (1024, 2048, 4096):
        a, b, out = (
            torch.randn(size, size),
            torch.randn(size, size),
            torch.empty(size, size),
        )
        seconds = best_seconds(lambda: torch.mm(a, b, out=out), repeats)
        best = max(best, 2 * size**3 / seconds / 1e9)
    return best


def embedder(config):
    """A waveform-to-embedding function for a model ``config``, in eval mode."""
    features = LogMelFeatures(SAMPLE_RATE)
    norm = UtteranceNorm()
    model = EmbeddingModel(**config).eval()

    def embed(wavs):
        feats = norm(features(wavs))
        return model(feats)

    return embed, sum(p.numel() for p in model.parameters())


def measure(embed, batch, repeats):
    """(ms per utterance, GFLOP per utterance) for a batch of 3 s utterances."""
    wavs = torch.randn(batch, int(SECONDS * SAMPLE_RATE)) * 0.1
    with torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            embed(wavs)
        seconds = best_seconds(lambda: embed(wavs), repeats)
    return 1000 * seconds / batch, counter.get_total_flops() / batch / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats (best is kept)"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    keep_freed_memory()
    peak = matmul_peak_gflops(args.repeats)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"fp32 matmul peak {peak:.1f} GFLOP/s"
    )
    print(
        f"{'model':38s} {'params':>8s} {'batch':>5s} {'ms/utt':>8s} {'GFLOP/utt':>9s} "
        f"{'GFLOP/s':>8s} {'of peak':>7s}"
    )
    for name, config in MODELS.items():
        embed, n_params = embedder(config)
        for batch in (1, 16):
            ms, gflop = measure(embed, batch, args.repeats)
            rate = gflop / (ms / 1000)
            print(
                f"{name:38s} {n_params / 1e6:7.1f}M {batch:5d} {ms:8.1f} {gflop:9.2f} "
                f"{rate:8.1f} {rate / peak:7.1%}"
            )


if __name__ == "__main__":
    main()
