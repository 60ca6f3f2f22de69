"""How fast: training and embedding throughput, peak memory, share of the machine's peak.

Per model: training throughput (utterances/s on batches of 16 random 3.5 s
crops: features, forward, AM-Softmax, backward, AdamW step), embedding
throughput of 3 s utterances at batch 1 and 16 (waveform to embedding,
``torch.inference_mode``), peak memory (resident set on CPU, allocated on
GPU), GFLOP per utterance (``torch.utils.flop_counter``) and the achieved
fraction of this machine's fp32 matmul peak, measured in the same process.

Rows: DMHA at the recipes' default size and at paper size, SpeechBrain's
ECAPA-TDNN, and the original research code's paper-size model as it ran:
rebuilt from ``docs/original-model.md`` in ``tests/test_original.py`` (the same reference the import
tests check against), fed librosa features computed per utterance
(``tests/test_features.py``'s reference), with PyTorch's default
contiguous layout and without ``keep_freed_memory``; its weights are those of
the DMHA paper-size row (``dmha_modules.original`` maps them), and the cosine
between the two rows' embeddings is printed. Each model runs in its own
process, so the peak memory and the allocator state are its own.

    python bench/speed.py [--models dmha,dmha_paper,ecapa,original] [--compile] [--repeats 3]

``--compile`` adds rows for DMHA under ``torch.compile``.
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_RATE = 16000
EMBED_SECONDS, CROP_SECONDS, TRAIN_BATCH, CLASSES = 3.0, 3.5, 16, 100
MODELS = {
    "dmha": ("DMHA, VGG4L k=128, 8 heads (the default until 2026-11-25)", dict(channels=128, heads=8)),
    "dmha_paper": ("DMHA, paper size (VGG4L k=1024, 16 heads)", dict(channels=1024, heads=16)),
    "ecapa": ("ECAPA-TDNN (C=512, 192-d)", None),
    "original": ("original code, paper size (same weights)", None),
}


def best_seconds(fn, repeats):
    """Best wall-clock time of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak_gflops(repeats, device):
    """The machine's fp32 matmul peak: best GFLOP/s of square products into a preallocated output."""
    best = 0.0
    for size in (1024, 2048, 4096):
        a, b, out = (torch.randn(size, size, device=device) for _ in range(3))
        seconds = best_seconds(lambda: torch.mm(a, b, out=out), repeats)
        best = max(best, 2 * size**3 / seconds / 1e9)
    return best


def flops_per_utterance(embed, wavs):
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        embed(wavs)
    return counter.get_total_flops() / len(wavs)


def noise(batch, seconds, device):
    return (0.1 * torch.randn(batch, int(seconds * SAMPLE_RATE))).to(device)


def ours(name, device, compile_model):
    """Embedding and training-step functions of a DMHA or ECAPA model, as the recipe runs it."""
    from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
    from dmha_modules.nn.embedding import embed_waveforms
    from dmha_modules.nn.heads import Classifier
    from dmha_modules.nn.losses import AMSoftmaxLoss
    from dmha_modules.nn.models import EmbeddingModel
    from dmha_modules.allocator import keep_freed_memory

    keep_freed_memory()
    if name == "ecapa":
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        model, size = ECAPA_TDNN(80, channels=[512, 512, 512, 512, 1536], lin_neurons=192), 192
    else:
        model, size = EmbeddingModel(front_end="VGG4L", **MODELS[name][1]), 400
    modules = torch.nn.ModuleDict({
        "compute_features": LogMelFeatures(SAMPLE_RATE),
        "mean_var_norm": UtteranceNorm(),
        "embedding_model": model,
        "classifier": Classifier(size, CLASSES, size),
    }).to(device)
    if compile_model:
        modules["embedding_model"] = torch.compile(model)
    loss = AMSoftmaxLoss(margin=0.4, scale=30.0)
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-4)
    labels = torch.randint(0, CLASSES, (TRAIN_BATCH,), device=device)
    crops = noise(TRAIN_BATCH, CROP_SECONDS, device)

    def embed(wavs):
        modules.eval()
        return embed_waveforms(modules, wavs)

    def train_step():
        modules.train()
        optimizer.zero_grad()
        loss(modules["classifier"](embed_waveforms(modules, crops)), labels).backward()
        optimizer.step()

    return embed, train_step, model, None


def original(device):
    """The original code's model and pipeline (see the module docstring), and a cosine check."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from test_features import librosa_log_mel
    from test_original import random_original_model, save_original, original_settings

    from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
    from dmha_modules.nn.embedding import embed_waveforms
    from dmha_modules.nn.models import EmbeddingModel
    from dmha_modules.original import load_original

    settings = original_settings()
    settings.kernel_size, settings.heads_number, settings.num_spkrs = 1024, 16, CLASSES
    original_model = random_original_model(settings).to(device)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, config = save_original(original_model.cpu(), settings, pathlib.Path(folder))
        converted = load_original(checkpoint, config)
    original_model.to(device)
    dmha = EmbeddingModel(**converted.embedding_kwargs)
    dmha.load_state_dict(converted.embedding_state)
    modules = torch.nn.ModuleDict({
        "compute_features": LogMelFeatures(SAMPLE_RATE),
        "mean_var_norm": UtteranceNorm(),
        "embedding_model": dmha.eval(),
    }).to(device)

    def features(wavs):
        # The original: librosa per utterance, mean normalisation, then a tensor.
        feats = [librosa_log_mel(wav.cpu().numpy(), SAMPLE_RATE) for wav in wavs]
        feats = np.stack([f - f.mean(axis=0) for f in feats])
        return torch.from_numpy(feats).float().to(device)

    def embed(wavs):
        original_model.eval()
        with torch.no_grad():
            return original_model.getEmbedding(features(wavs))

    labels = torch.randint(0, CLASSES, (TRAIN_BATCH,), device=device)
    # The original trained from precomputed features.
    crops = features(noise(TRAIN_BATCH, CROP_SECONDS, device))
    optimizer = torch.optim.Adam(original_model.parameters(), lr=1e-4)

    def train_step():
        original_model.train()
        optimizer.zero_grad()
        _, logits = original_model(crops, labels)
        F.cross_entropy(logits, labels).backward()
        optimizer.step()

    wav = noise(1, 7.3, device)
    with torch.inference_mode():
        cosine = F.cosine_similarity(embed(wav), embed_waveforms(modules, wav)[:, 0]).item()
    return embed, train_step, original_model, cosine


def child(name, device, repeats, compile_model):
    """Measures one model; prints its figures as JSON."""
    torch.manual_seed(0)
    peak = matmul_peak_gflops(repeats, device)
    if name == "original":
        embed, train_step, model, cosine = original(device)
    else:
        embed, train_step, model, cosine = ours(name, device, compile_model)
    figures = {"params": sum(p.numel() for p in model.parameters()), "peak_gflops": peak,
               "cosine": cosine}
    for batch in (1, 16):
        wavs = noise(batch, EMBED_SECONDS, device)
        with torch.inference_mode():
            seconds = best_seconds(lambda: embed(wavs), repeats)
        figures[f"embed_ms_b{batch}"] = 1000 * seconds / batch
    if not compile_model:  # FlopCounterMode does not see inside compiled graphs
        figures["gflop"] = flops_per_utterance(embed, noise(1, EMBED_SECONDS, device)) / 1e9
    figures["train_utt_s"] = TRAIN_BATCH / best_seconds(train_step, max(1, repeats - 1))
    if device == "cuda":
        figures["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        figures["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="dmha,dmha_paper,ecapa,original")
    parser.add_argument("--compile", action="store_true", help="add torch.compile rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.device, args.repeats, args.compiled)

    runs = [(name, False) for name in args.models.split(",")]
    if args.compile:
        runs += [(name, True) for name in args.models.split(",") if name.startswith("dmha")]
    device_name = (torch.cuda.get_device_name(0) if args.device == "cuda"
                   else f"CPU, {torch.get_num_threads()} threads")
    print(f"torch {torch.__version__}, {device_name}; each row in its own process\n")
    print("| model | params | train utt/s (3.5 s, batch 16) | embed ms/utt (3 s) batch 1 | "
          "batch 16 | GFLOP/utt | batch 16 / fp32 matmul peak | peak memory |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    for name, compiled in runs:
        command = [sys.executable, os.path.abspath(__file__), "--child", name,
                   "--device", args.device, "--repeats", str(args.repeats)]
        output = subprocess.run(command + (["--compiled"] if compiled else []),
                                check=True, capture_output=True, text=True).stdout
        r = json.loads(output.strip().splitlines()[-1])
        results[name, compiled] = r
        gflop = r.get("gflop") or results.get((name, False), {}).get("gflop")
        share = (f"{gflop / (r['embed_ms_b16'] / 1000) / r['peak_gflops']:.0%} of "
                 f"{r['peak_gflops']:.0f} GFLOP/s" if gflop else "")
        label = MODELS[name][0] + (" + torch.compile" if compiled else "")
        print(f"| {label} | {r['params'] / 1e6:.2f} M | {r['train_utt_s']:.2f} | "
              f"{r['embed_ms_b1']:.1f} | {r['embed_ms_b16']:.1f} | "
              f"{gflop or float('nan'):.2f} | {share} | {r['peak_memory_mb']:.0f} MB |", flush=True)
    if ("original", False) in results and ("dmha_paper", False) in results:
        ref, new = results["original", False], results["dmha_paper", False]
        print(f"\nDMHA paper size vs the original code, same weights: embedding throughput "
              f"x{ref['embed_ms_b1'] / new['embed_ms_b1']:.2f} at batch 1, "
              f"x{ref['embed_ms_b16'] / new['embed_ms_b16']:.2f} at batch 16, training "
              f"x{new['train_utt_s'] / ref['train_utt_s']:.2f}; cosine between their "
              f"embeddings {ref['cosine']:.6f}")


if __name__ == "__main__":
    main()
