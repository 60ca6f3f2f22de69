"""How fast, in fp32, bf16 and int8: throughput, peak memory, share of each engine's own peak.

Per model and precision, each in its own process: embedding time of 3 s
utterances at batch 1 and 16 (waveform to embedding), training throughput
(utterances/s on batches of 16 random 3.5 s crops: features, forward,
AM-Softmax, backward, AdamW step; fp32 and bf16 only, int8 has no training),
peak memory (resident set after embedding, and after training), the cosine of
each embedding to the fp32 PyTorch embedding of the same weights on real speech
(the first 3 s of ``librispeech-test-other-10spk`` files), the FLOP count per
utterance and the effective rate against the matrix-product peak of the engine
and number format that runs the row, measured in that same process.

Precisions:

- ``fp32``: PyTorch eager, as trained (peak: ``torch.mm`` fp32).
- ``bf16``: PyTorch under ``torch.autocast`` bf16, features and normalisation
  in fp32 (``dmha_modules.nn.precision.BF16Embedding``; peak: ``torch.mm`` on
  bf16). On a CPU without ``avx512_bf16`` / AMX, ``dmha --precision bf16``
  runs fp32 (the fp32 row is then what users get); the bench forces the bf16
  computation anyway and labels the row "emulated, not native". PyTorch's
  emulated bf16 is slow, so there the paper-size row is timed at batch 1 only.
- ``int8``: the ONNX export quantised by ``dmha_modules.folders.quantize``
  (ONNX Runtime, static QDQ; calibrated on speechocean762 files, the cosine
  measured on LibriSpeech), run by ONNX Runtime (peak: ONNX Runtime's
  ``MatMulInteger`` on int8). ``onnx``: the same graph in fp32 in ONNX Runtime
  (peak: its fp32 ``MatMul``), to separate the engine from the number format.

The FLOP count is ``torch.utils.flop_counter`` on the fp32 model: direct
convolution and matrix-product multiply-adds x 2. An effective rate can exceed
the peak: oneDNN may compute an fp32 convolution with fewer multiplications
(Winograd), and ONNX Runtime's fused int8 convolution kernels run faster than
the ``MatMulInteger`` operator the int8 peak is timed with (which writes int32
products out). Such a rate is printed as "> peak (...)" with the reason, never
as a percentage over 100.

The last model is the original research code's paper-size model as it ran
(rebuilt from ``docs/original-model.md`` in ``tests/test_original.py``, librosa
features per utterance, fp32) with the DMHA paper-size row's weights; the
cosine between the two is printed. Weights are random (seeded, saved by the
first row of a model and loaded by the others): accuracy on trained models is
``bench/quality.py --precisions``. The header names the CPU, its instruction
sets, the threads and the load average.

    python bench/speed.py [--models default,dmha_paper,original]
        [--precisions fp32,bf16,int8] [--repeats 3] [--compile]

Other models: ``dmha`` (VGG4L k=128, the default until 2026-11-25), ``ecapa``.
"""

import argparse
import glob
import json
import os
import pathlib
import platform
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
sys.path.insert(0, REPO)
from dmha_modules.nn.precision import SHOWN_FLAGS, cpu_flags, cpu_has_native_bf16  # noqa: E402

import peaks  # bench/, beside this script  # noqa: E402
from peaks import CLOCKS, best_seconds, engine_peak  # noqa: E402

SAMPLE_RATE = 16000
EMBED_SECONDS, CROP_SECONDS, TRAIN_BATCH, CLASSES = 3.0, 3.5, 16, 100
DATA = os.environ.get("DMHA_DATA", os.path.join(REPO, "..", "shared", "data"))
MODELS = {
    "default": ("DMHA default (ECAPA-TDNN C=256 frames, Double MHA 2 heads, hparams/speaker.yaml)",
                dict(channels=[256, 256, 256, 256, 768], lin_neurons=192, heads=2, with_std=True)),
    "dmha": ("DMHA, VGG4L k=128, 8 heads (the default until 2026-11-25)",
             dict(front_end="VGG4L", channels=128, heads=8)),
    "dmha_paper": ("DMHA, paper size (VGG4L k=1024, 16 heads)",
                   dict(front_end="VGG4L", channels=1024, heads=16)),
    "ecapa": ("ECAPA-TDNN (C=512, 192-d)", None),
    "original": ("original code, paper size (same weights)", None),
}
ENGINES = {"fp32": "PyTorch fp32", "bf16": "PyTorch bf16 autocast",
           "int8": "ONNX Runtime int8 (static QDQ)", "onnx": "ONNX Runtime fp32"}


def noise(batch, seconds):
    return 0.1 * torch.randn(batch, int(seconds * SAMPLE_RATE))


def speech(files, seconds=EMBED_SECONDS):
    """The first ``seconds`` of each file (repeated where shorter), ``(N, samples)``."""
    from dmha_modules.nn.embedding import load_utterance

    size = int(seconds * SAMPLE_RATE)
    return torch.stack([torch.from_numpy(np.resize(load_utterance(f, SAMPLE_RATE).numpy(), size))
                        for f in files])


def librispeech_files(count):
    files = sorted(glob.glob(os.path.join(DATA, "librispeech-test-other-10spk", "**", "*.flac"),
                             recursive=True))
    return files[:: max(1, len(files) // count)][:count]


def calibration_files(count):
    """``count`` speechocean762 files, one every few speakers (calibration of int8)."""
    with open(os.path.join(DATA, "speechocean762", "train", "wav.scp")) as listing:
        paths = [line.split()[1] for line in listing if line.strip()]
    return [os.path.join(DATA, "speechocean762", p) for p in paths[:: len(paths) // count][:count]]


def build_modules(name, workdir):
    """The feature, normalisation, embedding and classifier modules of a model, its weights
    saved in ``workdir`` by the first row and loaded by the others."""
    from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
    from dmha_modules.nn.heads import Classifier
    from dmha_modules.nn.models import ECAPADoubleMHA, EmbeddingModel

    if name == "ecapa":
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        model, size = ECAPA_TDNN(80, channels=[512, 512, 512, 512, 1536], lin_neurons=192), 192
    elif name == "default":
        model, size = ECAPADoubleMHA(**MODELS[name][1]), 192
    else:
        model, size = EmbeddingModel(**MODELS[name][1]), 400
    modules = torch.nn.ModuleDict({
        "compute_features": LogMelFeatures(SAMPLE_RATE), "mean_var_norm": UtteranceNorm(),
        "embedding_model": model, "classifier": Classifier(size, CLASSES, size)})
    weights = os.path.join(workdir, f"{name}.pt")
    if os.path.exists(weights):
        modules.load_state_dict(torch.load(weights, weights_only=True))
    else:
        torch.save(modules.state_dict(), weights)
    return modules


def reference_embeddings(name, workdir, modules=None):
    """fp32 PyTorch embeddings of the LibriSpeech crops (computed once per model, then read)."""
    from dmha_modules.nn.embedding import embed_waveforms

    path = os.path.join(workdir, f"{name}_fp32_embeddings.pt")
    if not os.path.exists(path):
        modules = modules or build_modules(name, workdir)
        with torch.inference_mode():
            wavs = speech(librispeech_files(int(os.environ["SPEED_COSINE_FILES"])))
            torch.save(torch.cat([embed_waveforms(modules.eval(), w[None])[:, 0] for w in wavs]),
                       path)
    return torch.load(path)


def pytorch_row(name, precision, workdir, compile_model):
    """Embedding and training-step functions of a DMHA or ECAPA model in fp32 or bf16."""
    from dmha_modules.allocator import keep_freed_memory
    from dmha_modules.nn.embedding import embed_waveforms
    from dmha_modules.nn.losses import AMSoftmaxLoss
    from dmha_modules.nn.precision import BF16Embedding

    keep_freed_memory()
    modules = build_modules(name, workdir)
    model = modules["embedding_model"]
    reference = reference_embeddings(name, workdir, modules)
    if compile_model:
        modules["embedding_model"] = torch.compile(modules["embedding_model"])
    if precision == "bf16":
        modules["embedding_model"] = BF16Embedding(modules["embedding_model"])
    loss = AMSoftmaxLoss(margin=0.4, scale=30.0)
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-4)
    labels = torch.randint(0, CLASSES, (TRAIN_BATCH,))
    crops = noise(TRAIN_BATCH, CROP_SECONDS)

    def embed(wavs):
        modules.eval()
        return embed_waveforms(modules, wavs)[:, 0]

    def train_step():
        modules.train()
        optimizer.zero_grad()
        loss(modules["classifier"](embed_waveforms(modules, crops)), labels).backward()
        optimizer.step()

    return embed, train_step, model, reference


def prepare_onnx(name, workdir):
    """Writes the model's ONNX export and its int8 quantisation into ``workdir`` (a process
    of its own, so that the rows' peak memory is that of running the graphs)."""
    from dmha_modules.folders.onnx_export import export_onnx
    from dmha_modules.folders.quantize import quantize_int8

    modules = build_modules(name, workdir).eval()
    reference_embeddings(name, workdir, modules)
    fp32_path = os.path.join(workdir, f"{name}.onnx")
    export_onnx(modules["compute_features"], modules["mean_var_norm"],
                modules["embedding_model"], fp32_path)
    os.makedirs(os.path.join(workdir, name), exist_ok=True)
    files = calibration_files(int(os.environ["SPEED_CALIBRATION_FILES"]))
    quantize_int8(fp32_path, os.path.join(workdir, name, "embedding_int8.onnx"),
                  [w.numpy() for w in speech(files)], "speechocean762")


def onnx_row(name, precision, workdir):
    """Embedding function of the model's ONNX graph in ONNX Runtime, int8 or fp32."""
    from dmha_modules.folders.onnx_export import OnnxEmbedder

    path = (os.path.join(workdir, name, "embedding_int8.onnx") if precision == "int8"
            else os.path.join(workdir, f"{name}.onnx"))
    session = OnnxEmbedder(path, num_threads=torch.get_num_threads())
    return session, None, None, reference_embeddings(name, workdir)


def original_row(workdir):
    """The original code's model and pipeline (see the module docstring), and the cosine
    between its embedding and DMHA's paper-size model holding the same weights."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from test_features import librosa_log_mel
    from test_original import original_settings, random_original_model, save_original

    from dmha_modules.nn.embedding import embed_waveforms
    from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
    from dmha_modules.nn.models import EmbeddingModel
    from dmha_modules.original import load_original

    settings = original_settings()
    settings.kernel_size, settings.heads_number, settings.num_spkrs = 1024, 16, CLASSES
    original_model = random_original_model(settings)
    converted = load_original(*save_original(original_model, settings, pathlib.Path(workdir)))
    dmha = EmbeddingModel(**converted.embedding_kwargs)
    dmha.load_state_dict(converted.embedding_state)
    modules = torch.nn.ModuleDict({"compute_features": LogMelFeatures(SAMPLE_RATE),
                                   "mean_var_norm": UtteranceNorm(), "embedding_model": dmha})

    def features(wavs):
        # The original: librosa per utterance, mean normalisation, then a tensor.
        feats = [librosa_log_mel(wav.numpy(), SAMPLE_RATE) for wav in wavs]
        return torch.from_numpy(np.stack([f - f.mean(axis=0) for f in feats])).float()

    def embed(wavs):
        original_model.eval()
        with torch.no_grad():
            return original_model.getEmbedding(features(wavs))

    labels = torch.randint(0, CLASSES, (TRAIN_BATCH,))
    crops = features(noise(TRAIN_BATCH, CROP_SECONDS))  # it trained from precomputed features
    optimizer = torch.optim.Adam(original_model.parameters(), lr=1e-4)

    def train_step():
        original_model.train()
        optimizer.zero_grad()
        _, logits = original_model(crops, labels)
        F.cross_entropy(logits, labels).backward()
        optimizer.step()

    wav = noise(1, 7.3)
    with torch.inference_mode():
        cosine = F.cosine_similarity(embed(wav), embed_waveforms(modules.eval(), wav)[:, 0])
    return embed, train_step, original_model, float(cosine)


def flops_per_utterance(embed, wavs):
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        embed(wavs)
    return counter.get_total_flops() / len(wavs)


def max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cosines(embed, reference, count):
    """Min and mean cosine to ``reference`` of the first ``count`` LibriSpeech crops, one at a time."""
    wavs = speech(librispeech_files(int(os.environ["SPEED_COSINE_FILES"])))[:count]
    with torch.inference_mode():
        got = torch.cat([embed(w[None]).float() for w in wavs])
    values = F.cosine_similarity(got, reference[:count])
    return float(values.min()), float(values.mean()), count


def child(name, precision, workdir, repeats, compile_model):
    """Measures one model in one precision; prints its figures as JSON."""
    torch.manual_seed(0)
    if precision == "prepare":
        return prepare_onnx(name, workdir)
    native = cpu_has_native_bf16()
    # Emulated bf16 runs the paper-size model minutes per batch: batch 1, once, 5 files.
    slow = precision == "bf16" and not native and name == "dmha_paper"
    int8_path = os.path.join(workdir, name, "embedding_int8.onnx")
    peak, peak_label = engine_peak(precision, repeats, native, int8_path)
    reference, cosine = None, None
    if name == "original":
        embed, train_step, model, cosine = original_row(workdir)
    elif precision in ("int8", "onnx"):
        embed, train_step, model, reference = onnx_row(name, precision, workdir)
    else:
        embed, train_step, model, reference = pytorch_row(name, precision, workdir, compile_model)
    figures = {"peak_gflops": peak, "peak_label": peak_label, "original_cosine": cosine,
               "params": model and sum(p.numel() for p in model.parameters())}
    for batch in (1,) if slow else (1, 16):
        wavs = noise(batch, EMBED_SECONDS)
        with torch.inference_mode():
            seconds = best_seconds(lambda: embed(wavs), 1 if slow else repeats)
        figures[f"embed_ms_b{batch}"] = 1000 * seconds / batch
    figures["rss_embed_mb"] = max_rss_mb()
    if reference is not None:
        figures["cosine"] = cosines(embed, reference, 5 if slow else len(reference))
    if precision == "fp32" and not compile_model:  # FlopCounterMode does not see compiled graphs
        figures["gflop"] = flops_per_utterance(embed, noise(1, EMBED_SECONDS)) / 1e9
    if train_step is not None and not slow:
        figures["train_utt_s"] = TRAIN_BATCH / best_seconds(train_step, max(1, repeats - 1))
        figures["rss_train_mb"] = max_rss_mb()
    print(json.dumps(figures))


def cpu_line():
    """The CPU model, its relevant instruction sets, threads and load: the header."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or model
    flags = cpu_flags()
    shown = " ".join(f for f in SHOWN_FLAGS if f in flags) or "none of them"
    missing = " ".join(f for f in SHOWN_FLAGS if f not in flags) or "none"
    native = "native" if cpu_has_native_bf16(flags) else "NOT native (emulated by PyTorch)"
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"CPU: {model}, {os.cpu_count()} logical cores, {torch.get_num_threads()} threads; "
            f"flags {shown} (absent: {missing}); bf16 {native}; load average {load}")


def share(effective, peak, emulated=False):
    """The effective rate against the engine's peak, never a share over 100 %."""
    if effective > peak and emulated:
        # PyTorch's emulated bf16 matmul is a slow generic loop; its convolutions are not.
        return (f"{effective:.3g} vs {peak:.3g}: > the emulated matmul's rate (the convolutions "
                "take a faster emulated path)")
    if effective > peak:
        return (f"{effective:.3g} vs peak {peak:.3g}: > peak (fewer multiplications than counted, "
                "or a fused kernel faster than the timed product)")
    return f"{effective:.3g} = {effective / peak:.0%} of {peak:.3g}"


def row_cells(name, precision, r, gflop):
    """The Markdown cells of one measured row."""
    native = cpu_has_native_bf16()
    engine = ENGINES[precision] + (" (emulated, not native)" if precision == "bf16"
                                   and not native else "")
    batch = "embed_ms_b16" if "embed_ms_b16" in r else "embed_ms_b1"
    emulated = precision == "bf16" and not native
    rate = share(gflop / (r[batch] / 1000), r["peak_gflops"], emulated) if gflop else ""
    rate += f" ({r['peak_label']}{'' if batch.endswith('16') else '; batch 1'})"
    cosine = ("{:.5f} / {:.5f} ({} files)".format(*r["cosine"]) if r.get("cosine")
              else "reference" if precision == "fp32" and name != "original" else "")
    memory = f"{r['rss_embed_mb']:.0f}" + (f" / {r['rss_train_mb']:.0f}" if "rss_train_mb" in r
                                            else " / –")
    return [MODELS[name][0], engine, f"{r['train_utt_s']:.2f}" if "train_utt_s" in r else "–",
            f"{r['embed_ms_b1']:.1f}", f"{r['embed_ms_b16']:.1f}" if "embed_ms_b16" in r else "–",
            cosine, f"{gflop:.2f}" if gflop else "", rate, memory]


def comparisons(results):
    """Lines: each paper-size precision against the original code, and the issue's targets."""
    ref = results.get(("original", "fp32"))
    if not ref:
        return []
    flags = cpu_flags()
    avx512 = {"avx512_vnni", "avx512_bf16"} <= flags
    target = 4 if avx512 else 2
    lines = [""]
    for (name, precision), r in results.items():
        if name != "dmha_paper":
            continue
        parts = [f"x{ref[f'embed_ms_b{b}'] / r[f'embed_ms_b{b}']:.2f} at batch {b}"
                 for b in (1, 16) if f"embed_ms_b{b}" in r]
        if "train_utt_s" in r:
            parts.append(f"training x{r['train_utt_s'] / ref['train_utt_s']:.2f}")
        line = f"DMHA paper size, {ENGINES[precision]}, vs the original code: {', '.join(parts)}"
        if precision == "int8":
            met = all(ref[f"embed_ms_b{b}"] / r[f"embed_ms_b{b}"] >= target for b in (1, 16))
            line += (f"; issue 29 target on this CPU ({'AVX-512 VNNI + BF16' if avx512 else 'AVX2'}"
                     f"): x{target} at batch 1 and 16, {'met' if met else 'MISSED'}")
        lines.append(line)
    lines.append(f"Cosine between the original code's and DMHA's embeddings (same weights): "
                 f"{ref['original_cosine']:.6f}")
    return lines


def run_child(name, precision, args, workdir, compiled=False):
    """One row's figures, measured in its own process."""
    command = [sys.executable, os.path.abspath(__file__), "--child", name, "--precision",
               precision, "--workdir", workdir, "--repeats", str(args.repeats),
               "--clock", args.clock] + (["--threads", str(args.threads)] if args.threads else [])
    env = dict(os.environ, SPEED_COSINE_FILES=str(args.cosine_files),
               SPEED_CALIBRATION_FILES=str(args.calibration_files),
               **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    output = subprocess.run(command + (["--compiled"] if compiled else []), check=True,
                            capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1]) if precision != "prepare" else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="default,dmha_paper,original",
                        help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--precisions", default="fp32,bf16,int8",
                        help="comma-separated, of fp32, bf16, int8, onnx (ONNX Runtime fp32)")
    parser.add_argument("--compile", action="store_true", help="add fp32 torch.compile rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cosine_files", type=int, default=20,
                        help="LibriSpeech files (first 3 s) for the cosine to fp32")
    parser.add_argument("--calibration_files", type=int, default=20,
                        help="speechocean762 files (first 3 s) calibrating int8")
    parser.add_argument("--threads", type=int, help="CPU threads of PyTorch and ONNX Runtime "
                        "(default: PyTorch's)")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall-clock time, or process CPU time (with --threads 1: time on "
                        "one core, steadier on a shared machine)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    peaks.clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args.child, args.precision, args.workdir, args.repeats, args.compiled)
    models, precisions = args.models.split(","), args.precisions.split(",")
    for value, known in ((models, MODELS), (precisions, ENGINES)):
        unknown = sorted(set(value) - set(known))
        if unknown:
            parser.error(f"unknown {', '.join(unknown)}; known: {', '.join(known)}")
    # fp32 first where asked for: it saves the weights and the reference embeddings.
    runs = [(name, p, False) for name in models
            for p in (["fp32"] if name == "original" else sorted(precisions, key="fp32".__ne__))]
    runs += [(name, "fp32", True) for name in models if args.compile and name != "original"]
    import onnxruntime

    print(f"{cpu_line()}\ntorch {torch.__version__}, onnxruntime {onnxruntime.__version__}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; each row in its own process; "
          f"times: {'process CPU time' if args.clock == 'cpu' else 'wall clock'}\n")
    headers = ["model", "precision (engine)", "train utt/s (3.5 s, batch 16)",
               "embed ms/utt (3 s) batch 1", "batch 16", "cosine to fp32, min / mean",
               "GFLOP/utt counted", "effective GFLOP/s at batch 16 vs the engine's peak",
               "peak memory MB, embed / train"]
    print("| " + " | ".join(headers) + " |\n|---|---|" + "---:|" * (len(headers) - 2))
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name, precision, compiled in runs:
            if precision in ("int8", "onnx") and not os.path.exists(
                    os.path.join(workdir, f"{name}.onnx")):
                run_child(name, "prepare", args, workdir)
            r = run_child(name, precision, args, workdir, compiled)
            if not compiled:
                results[name, precision] = r
            gflop = r.get("gflop") or results.get((name, "fp32"), {}).get("gflop")
            cells = row_cells(name, precision, r, gflop)
            if compiled:
                cells[1] += " + torch.compile"
            print("| " + " | ".join(cells) + " |", flush=True)
    print("\n".join(comparisons(results)))
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
