#!/usr/bin/env python3
"""Is dmha ready for a GPU? Six checks, one table (run through ``bench/gpu_check.sh``).

    bench/gpu_check.sh           # on a GPU: paper-size figures, under 8 minutes
    bench/gpu_check.sh --cpu     # a tiny version of every row on the CPU, in CI time

Rows: paper-size training throughput (VGG4L k=1024, DMHA-16, 400-d, 3.5 s
crops, AM-Softmax over VoxCeleb2's 5,994 speakers, AdamW) at batch 64 in fp32
and under bf16 autocast; a short training on real speech
(``librispeech-test-other-10spk`` of ``DMHA_DATA``) whose loss must fall;
one-process DDP (nccl; gloo with ``--cpu``); ``dmha embed`` on the device
against the same files on the CPU; ONNX Runtime's CUDA provider (the CPU one
with ``--cpu``) against PyTorch. Without CUDA (and without ``--cpu``) every
row says ``skipped: no GPU``. With ``--cpu`` the sizes are tiny: those rows
say the code runs, not how fast a GPU is.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm  # noqa: E402
from dmha_modules.nn.heads import Classifier  # noqa: E402
from dmha_modules.nn.losses import AMSoftmaxLoss  # noqa: E402
from dmha_modules.nn.models import EmbeddingModel  # noqa: E402

ROWS = ["train fp32", "train bf16", "real-speech training",
        "DDP, 1 process", "dmha embed", "ONNX Runtime"]
# The paper's model, and a tiny one for --cpu.
SIZES = {
    "paper": dict(model=dict(channels=1024, heads=16, emb_dim=400, mask_prob=0.3,
                             batch_norm=False), batch=64, crop=3.5, classes=5994, steps=10),
    "tiny": dict(model=dict(channels=16, heads=4, emb_dim=32, mask_prob=0.0, batch_norm=True),
                 batch=4, crop=1.0, classes=100, steps=3),
}
LIBRISPEECH = "librispeech-test-other-10spk"


class Trainer(torch.nn.Module):
    """Waveforms -> log-Mel -> embedding model -> cosine classifier -> AM-Softmax loss."""

    def __init__(self, model, classes):
        super().__init__()
        self.features, self.norm = LogMelFeatures(), UtteranceNorm(std_norm=False)
        self.model = EmbeddingModel(**model)
        self.classifier = Classifier(model["emb_dim"], n_classes=classes,
                                     hidden_size=model["emb_dim"])
        self.loss = AMSoftmaxLoss()

    def forward(self, wavs, targets):
        with torch.autocast(wavs.device.type, enabled=False):
            feats = self.norm(self.features(wavs))
        return self.loss(self.classifier(self.model(feats))[:, 0], targets)


def train_steps(trainer, batches, device, bf16=False):
    """Runs one AdamW step per (wavs, targets); returns the losses and the seconds of each."""
    optimizer = torch.optim.AdamW(trainer.parameters(), lr=1e-3)
    losses, seconds = [], []
    for wavs, targets in batches:
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = trainer(wavs.to(device), targets.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))  # synchronises
        seconds.append(time.perf_counter() - start)
    return losses, seconds


def throughput(size, device, bf16):
    """Training crops per second (after 2 warm-up steps) and peak memory."""
    torch.manual_seed(0)
    trainer = Trainer(size["model"], size["classes"]).to(device).train()
    samples = int(size["crop"] * 16000)
    batches = [(torch.randn(size["batch"], samples) * 0.1,
                torch.randint(size["classes"], (size["batch"],)))
               for _ in range(size["steps"] + 2)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _, seconds = train_steps(trainer, batches, device, bf16)
    rate = size["batch"] / np.mean(seconds[2:])
    memory = (f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
              if device.type == "cuda" else "")
    return "ok", (f"{rate:.1f} crops/s (batch {size['batch']}, {size['crop']} s crops, "
                  f"{size['steps']} timed steps{memory})")


def real_speech(size, device, data):
    """A short training on LibriSpeech's 10 speakers: the loss of the last steps against the first."""
    folder = Path(data) / LIBRISPEECH
    files = sorted(folder.rglob("*.flac"))
    if not files:
        return "skipped", f"no {LIBRISPEECH} under {data} (DMHA_DATA)"
    speakers = sorted({path.relative_to(folder).parts[0] for path in files})
    crop = int(size["crop"] * 16000)
    clips = [(soundfile.read(path, dtype="float32")[0],
              speakers.index(path.relative_to(folder).parts[0])) for path in files]
    rng = np.random.default_rng(0)
    steps, batch = (150, 32) if device.type == "cuda" else (25, 6)

    def crops():
        for _ in range(steps):
            chosen = rng.choice(len(clips), batch)
            wavs = []
            for i in chosen:
                wav = clips[i][0]
                start = rng.integers(0, max(1, wav.size - crop))
                wavs.append(np.pad(wav[start:start + crop], (0, max(0, crop - wav.size))))
            yield torch.from_numpy(np.stack(wavs)), torch.tensor([clips[i][1] for i in chosen])

    torch.manual_seed(0)
    model = dict(size["model"], mask_prob=0.0, batch_norm=True)
    if device.type == "cuda":  # mid-size, to learn within the budget
        model.update(channels=128, heads=4, emb_dim=192)
    trainer = Trainer(model, len(speakers)).to(device).train()
    losses, _ = train_steps(trainer, crops(), device)
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    status = "ok" if last < first else "FAILED"
    return status, (f"loss {first:.2f} -> {last:.2f} (mean of first / last 5 of {steps} "
                    f"steps, batch {batch}, {len(speakers)} speakers)")


def ddp_one_process(device):
    """One-process DistributedDataParallel: nccl on a GPU, gloo on the CPU; one step."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.distributed.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}",
                                         rank=0, world_size=1)
    try:
        size = SIZES["tiny"]
        model = torch.nn.parallel.DistributedDataParallel(
            Trainer(size["model"], 10).to(device),
            device_ids=[device.index or 0] if device.type == "cuda" else None)
        batch = [(torch.randn(4, 16000) * 0.1, torch.arange(4))]
        losses, seconds = train_steps(model, batch, device)
        flag = torch.ones(2, device=device)
        torch.distributed.all_reduce(flag)
    finally:
        torch.distributed.destroy_process_group()
    return "ok", f"{backend}: a step (loss {losses[0]:.2f}) and an all_reduce"


def tiny_model_folder(folder, size):
    """A model folder of a random model of ``size`` (BatchNorm statistics of a few inputs)."""
    from speechbrain.dataio.encoder import CategoricalEncoder
    from dmha_modules.folders.model_folder import write_model_folder

    torch.manual_seed(0)
    kwargs = dict(size["model"], mask_prob=0.0)
    modules = dict(compute_features=LogMelFeatures(), mean_var_norm=UtteranceNorm(),
                   embedding_model=EmbeddingModel(**kwargs).eval(),
                   classifier=Classifier(kwargs["emb_dim"], n_classes=3,
                                         hidden_size=kwargs["emb_dim"]))
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(["a", "b", "c"])
    sample = torch.randn(16000) * 0.1
    write_model_folder(str(folder), modules, ("dmha_modules.nn.models.EmbeddingModel", kwargs),
                       encoder, sample)
    return modules


def embed_files(data, count):
    """Real speech files for the embedding rows (generated tones if DMHA_DATA is absent)."""
    files = sorted((Path(data) / LIBRISPEECH).rglob("*.flac"))[:count]
    if files:
        return files
    folder = Path(tempfile.mkdtemp())
    for i in range(count):
        t = np.arange(24000) / 16000
        soundfile.write(folder / f"tone{i}.wav", 0.1 * np.sin(2 * np.pi * (120 + 20 * i) * t),
                        16000)
    return sorted(folder.glob("*.wav"))


def dmha_embed(device, size, data, work):
    """``dmha embed --device`` on real speech, against ``--device cpu`` on the same files."""
    tiny_model_folder(work / "model", size)
    files = embed_files(data, 100 if device.type == "cuda" else 10)
    listing = work / "files.lst"
    listing.write_text("".join(f"{path}\n" for path in files))
    outputs, seconds = {}, {}
    for where in dict.fromkeys([device.type, "cpu"]):
        out = work / f"embeddings_{where}.npz"
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "dmha_modules.cli", "embed", "--model", str(work / "model"),
             "--device", where, "--list", str(listing), "--out", str(out), "--no_progress"],
            capture_output=True, text=True, cwd=REPO)
        seconds[where] = time.perf_counter() - start
        if result.returncode:
            return "FAILED", result.stderr.strip().splitlines()[-1][:200]
        with np.load(out) as saved:
            outputs[where] = {key: saved[key].ravel() for key in saved.files}
    cosines = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
               for key, a in outputs[device.type].items() for b in [outputs["cpu"][key]]]
    return "ok", (f"{len(files)} files in {seconds[device.type]:.1f} s (whole command); "
                  f"worst cosine to --device cpu {min(cosines):.6f}")


def onnx_runtime(device, size, work):
    """The exported model in ONNX Runtime (CUDA provider on a GPU) against PyTorch."""
    import onnxruntime
    from dmha_modules.folders.onnx_export import OnnxEmbedder, export_onnx

    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in onnxruntime.get_available_providers():
        return "skipped", (f"onnxruntime {onnxruntime.__version__} has no {provider} "
                           "(pip install onnxruntime-gpu)")
    modules = tiny_model_folder(work / "onnx_model", size)
    path = work / "embedding.onnx"
    export_onnx(modules["compute_features"], modules["mean_var_norm"],
                modules["embedding_model"], str(path))
    embedder = OnnxEmbedder(path, providers=[provider])
    assert embedder.session.get_providers()[0] == provider
    wavs, lengths = torch.randn(4, 32000) * 0.1, torch.tensor([1.0, 0.8, 0.6, 0.5])
    with torch.no_grad():
        feats = modules["compute_features"](wavs)
        frames = modules["compute_features"].frame_lengths(lengths, wavs.shape[1])
        expected = modules["embedding_model"](modules["mean_var_norm"](feats, frames), frames)
    got = embedder(wavs, lengths)
    cosine = torch.nn.functional.cosine_similarity(got.reshape(4, -1),
                                                   expected.reshape(4, -1)).min()
    return "ok", f"{provider}: worst cosine to PyTorch {float(cosine):.6f} (4 padded waveforms)"


def run_checks(cpu, data):
    """``{row: (status, detail)}``, each check in its own try so that one failure shows."""
    device = torch.device("cpu" if cpu else "cuda")
    size = SIZES["tiny" if cpu else "paper"]
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    checks = {
        ROWS[0]: lambda: throughput(size, device, bf16=False),
        ROWS[1]: lambda: throughput(size, device, bf16=True),
        ROWS[2]: lambda: real_speech(size, device, data),
        ROWS[3]: lambda: ddp_one_process(device),
        ROWS[4]: lambda: dmha_embed(device, size, data, work),
        ROWS[5]: lambda: onnx_runtime(device, size, work),
    }
    results = {}
    for row, check in checks.items():
        if not cpu and not torch.cuda.is_available():
            results[row] = ("skipped: no GPU", "torch.cuda.is_available() is False")
            continue
        start = time.perf_counter()
        try:
            status, detail = check()
        except Exception as error:  # noqa: BLE001 - the table reports it
            status, detail = "FAILED", f"{type(error).__name__}: {error}"[:200]
        results[row] = (status, f"{detail}; {time.perf_counter() - start:.0f} s")
    return results


def device_name(cpu):
    if cpu:
        return "CPU (--cpu: tiny sizes)"
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "no GPU"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true",
                        help="a tiny version of every row on the CPU")
    parser.add_argument("--data", default=os.environ.get(
        "DMHA_DATA", str(REPO.parent / "shared" / "data")), help="real speech (DMHA_DATA)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = run_checks(args.cpu, args.data)
    print(f"dmha gpu_check on {device_name(args.cpu)}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| check | status | detail |\n|---|---|---|")
    for row in ROWS:
        status, detail = results[row]
        print(f"| {row} | {status} | {detail} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if any(status == "FAILED" for status, _ in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
