"""bf16 and int8 embeddings against fp32 (issue 29).

The fp32 references are the PyTorch modules (bf16) and the fp32 ONNX export
(int8) of the same tiny random model, whose BatchNorm statistics are set from
generated speech-like audio (else every input gives nearly the same
embedding, and closeness would prove nothing). Tolerances are derived in each
test from the number format's step.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from tests.cli.conftest import calibrated_modules
from tests.test_inference import voice

from dmha_modules.folders.onnx_export import OnnxEmbedder, export_onnx
from dmha_modules.folders.quantize import INT8_RECORD, describe, quantize_int8
from dmha_modules.nn import precision
from dmha_modules.nn.embedding import embed_waveforms
from dmha_modules.nn.precision import BF16Embedding, brain_precision, resolve_precision

# Calibration and held-out audio: different pitches and noise seeds.
CALIBRATION = [voice(1.5, 16000, 100 + 25 * i, seed=i) for i in range(8)]
HELD_OUT = [voice(2.0, 16000, 110 + 20 * i, seed=50 + i) for i in range(8)]


def cosines(a, b):
    """Cosines along the last axis (rows with rows, or broadcast)."""
    return torch.nn.functional.cosine_similarity(torch.as_tensor(a), torch.as_tensor(b), dim=-1)


def write_cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: {flags}\n")
    return str(path)


def test_cpu_flags_decide_whether_bf16_runs(tmp_path, monkeypatch):
    monkeypatch.delenv(precision.FORCE_BF16_VARIABLE, raising=False)
    avx2 = precision.cpu_flags(write_cpuinfo(tmp_path, "fpu sse2 avx2 fma"))
    assert avx2 == {"fpu", "sse2", "avx2", "fma"}
    ran, line = resolve_precision("bf16", "cpu", flags=avx2)
    assert ran == "fp32"
    assert line == ("this CPU (flags avx2 fma) has no native bf16 (avx512_bf16/AMX): "
                    "running fp32")
    for native in ("avx512f avx512_bf16", "amx_bf16 amx_tile"):
        flags = precision.cpu_flags(write_cpuinfo(tmp_path, native))
        assert resolve_precision("bf16", "cpu", flags=flags)[0] == "bf16"
    assert resolve_precision("fp32", "cpu", flags=avx2) == ("fp32", None)
    monkeypatch.setenv(precision.FORCE_BF16_VARIABLE, "1")  # the developers' switch
    assert resolve_precision("bf16", "cpu", flags=avx2)[0] == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", "cpu")


def test_bf16_embeddings_are_close_to_fp32_and_computed_in_bf16():
    """bf16 keeps 8 significant bits: each rounding is within 2**-9 (0.2 %) of the value.

    Products are summed in fp32, so over the ~10 layers the errors add up to
    about 0.5 % of the embedding (cosine ~0.99999) in a model that does not
    amplify them. This random model does: 0.1 % noise added to the waveform
    moves its embeddings to a cosine of 0.88. Measured here: worst 0.9989 of
    8 files; 0.998 leaves margin for other CPUs' kernels, and a model not run
    in bf16 (or with the features in bf16 as well, worst 0.9991 against 0.9996
    on the default model) is caught by the dtype checks.
    """
    modules = calibrated_modules(3, 5)
    reference = torch.nn.ModuleDict(modules)
    bf16 = torch.nn.ModuleDict(dict(modules, embedding_model=BF16Embedding(
        modules["embedding_model"])))
    wavs = torch.from_numpy(np.stack(HELD_OUT))
    seen = {}
    first_conv = next(m for m in modules["embedding_model"].modules()
                      if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, args, out: seen.update(conv=out.dtype))
    modules["compute_features"].register_forward_hook(
        lambda m, args, out: seen.update(features=out.dtype))
    with torch.no_grad():
        want = embed_waveforms(reference, wavs)[:, 0]
        seen.clear()
        got = embed_waveforms(bf16, wavs)[:, 0]
    assert seen == {"features": torch.float32, "conv": torch.bfloat16}
    assert got.dtype == torch.float32
    assert not torch.equal(got, want)  # bf16 did run
    assert float(cosines(got, want).min()) >= 0.998
    others = cosines(want[:, None], want[None]).fill_diagonal_(-1)  # (no broadcast in cosines)
    assert float(others.max()) < 0.99  # the inputs' embeddings differ far more than that


def test_a_brain_asked_for_bf16_on_a_cpu_without_it_runs_fp32(monkeypatch, capsys):
    from speechbrain.utils.autocast import TorchAutocast

    monkeypatch.delenv(precision.FORCE_BF16_VARIABLE, raising=False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    autocast = TorchAutocast(device_type="cpu", dtype=torch.bfloat16)
    brain = type("Brain", (), dict(device="cpu", precision="bf16", eval_precision="bf16",
                                   training_ctx=autocast, evaluation_ctx=autocast))()
    brain_precision(brain)
    assert (brain.precision, brain.eval_precision) == ("fp32", "fp32")
    with brain.training_ctx, brain.evaluation_ctx:
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert "has no native bf16 (avx512_bf16/AMX): running fp32" in capsys.readouterr().out
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    brain = type("Brain", (), dict(device="cpu", precision="bf16", eval_precision="fp32",
                                   training_ctx=autocast, evaluation_ctx=None))()
    brain_precision(brain)
    assert brain.precision == "bf16" and brain.training_ctx is autocast


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    """A tiny model's fp32 ONNX export and its int8 graph calibrated on ``CALIBRATION``."""
    folder = tmp_path_factory.mktemp("int8")
    modules = calibrated_modules(3, 5)
    fp32 = str(folder / "embedding.onnx")
    export_onnx(modules["compute_features"], modules["mean_var_norm"],
                modules["embedding_model"], fp32)
    int8 = str(folder / "embedding_int8.onnx")
    record = quantize_int8(fp32, int8, CALIBRATION, str(folder / "calibration.txt"))
    return folder, fp32, int8, record


def test_int8_embeddings_are_close_to_fp32(int8_model):
    """8-bit activations rounded to 1/255 of their calibrated range, weights per channel in 7 bits.

    The rounding noise of one layer is 30-35 dB below its signal for 8-bit
    activations a few times smaller than their range (measured with ONNX
    Runtime's qdq_loss_debug), a relative error of 2-3 % per layer; 7-bit
    weights (``reduce_range``, the step twice 8 bits') add as much again.
    Over the 8 quantised convolutions of this random model, which amplifies
    differences more than a trained one (0.1 % noise on the waveform: cosine
    0.88), measured: worst 0.952, mean 0.988 on 8 held-out files (with 8-bit
    uint8 weights: 0.983, 0.992; a trained model keeps 0.997 worst on real
    speech, docs/speed.md). Bounds 0.93 and 0.98 leave margin for other
    CPUs' kernels; with full-range signed weights (saturating AVX2 kernels)
    and the pooling quantised too, the worst was 0.57.
    """
    folder, fp32, int8, record = int8_model
    graph = onnx.load(int8)
    quantised = [init for init in graph.graph.initializer
                 if init.data_type == onnx.TensorProto.INT8 and len(init.dims) >= 2]
    convolutions = [node for node in graph.graph.node if node.op_type == "Conv"]
    assert len(quantised) >= len(convolutions) > 0  # every convolution's weights in 8 bits
    assert os.path.getsize(int8) < 0.5 * os.path.getsize(fp32)
    wavs = torch.from_numpy(np.stack(HELD_OUT))
    want = OnnxEmbedder(fp32)(wavs)
    got = OnnxEmbedder(int8)(wavs)
    similar = cosines(got, want)
    assert float(similar.mean()) >= 0.98 and float(similar.min()) >= 0.93
    # Each int8 embedding is nearest to its own file's fp32 embedding.
    assert (cosines(got[:, None], want[None]).argmax(dim=1) == torch.arange(len(wavs))).all()
    with open(folder / INT8_RECORD, encoding="utf-8") as f:
        assert json.load(f) == record
    assert record["calibration_files"] == len(CALIBRATION)
    assert record["calibration_list"] == "calibration.txt"
    assert describe(record) == ("int8 (ONNX Runtime, static QDQ, calibrated on 8 files of "
                                "calibration.txt)")
    measured = [cosines(OnnxEmbedder(int8)(torch.from_numpy(w)[None]),
                        OnnxEmbedder(fp32)(torch.from_numpy(w)[None]))[0] for w in CALIBRATION]
    assert record["cosine_to_fp32_on_calibration_files"]["min"] == pytest.approx(
        float(min(measured)), abs=1e-5)


ALONE = """
import sys, numpy as np, onnxruntime
wavs = np.load(sys.argv[2])
session = onnxruntime.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
out = [session.run(["embeddings"], {"wavs": w[None], "lengths": np.ones(1, np.float32)})[0][0]
       for w in wavs]
np.save(sys.argv[3], np.stack(out))
assert "torch" not in sys.modules, "torch was imported"
print("alone")
"""


def test_the_int8_graph_runs_in_onnx_runtime_alone(int8_model, tmp_path):
    _, _, int8, _ = int8_model
    wavs = np.stack(HELD_OUT)
    np.save(tmp_path / "wavs.npy", wavs)
    done = subprocess.run([sys.executable, "-c", ALONE, int8, str(tmp_path / "wavs.npy"),
                           str(tmp_path / "out.npy")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "alone"
    alone = np.load(tmp_path / "out.npy")
    # One file per run, as there: int8 kernels may round differently by batch size.
    embedder = OnnxEmbedder(int8)
    ours = np.stack([embedder(torch.from_numpy(wav)[None])[0].numpy() for wav in wavs])
    np.testing.assert_allclose(alone, ours, rtol=1e-5, atol=1e-5)


def test_a_model_folder_with_an_int8_graph_is_replaced_only_with_the_same_embeddings(tmp_path):
    """The int8 files are dmha's (the folder may be rewritten) but calibrated on the user's audio."""
    from dmha_modules.folders.replace import Replacement

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "hyperparams.yaml").write_text("sample_rate: 16000\n", encoding="utf-8")
    model = torch.nn.Linear(2, 2)
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    (folder / "embedding_int8.onnx").write_bytes(b"graph")
    (folder / "embedding_int8.json").write_text("{}", encoding="utf-8")
    kept = Replacement(str(folder), "sample_rate: 16000\n", model)
    assert kept.copied == ["embedding_int8.onnx", "embedding_int8.json"]
    with pytest.raises(ValueError, match="embedding_int8.onnx: fitted on the model in .*dmha "
                       r"export --precision int8.*remove embedding_int8.onnx and "
                       "embedding_int8.json"):
        Replacement(str(folder), "sample_rate: 16000\n", torch.nn.Linear(2, 2))


def test_the_recipe_brain_checks_bf16_against_the_cpu(monkeypatch, capsys):
    """SpeechBrain runs --precision bf16 under autocast on any CPU; the recipe's Brain checks it."""
    from dmha_modules.recipe.brains import SpeakerBrain

    monkeypatch.delenv(precision.FORCE_BF16_VARIABLE, raising=False)
    options = {"device": "cpu", "precision": "bf16", "eval_precision": "bf16"}
    for flags, expected in (({"avx2", "fma"}, "fp32"), ({"avx512f", "avx512_bf16"}, "bf16")):
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        brain = SpeakerBrain({}, {}, None, modules={"embedding_model": torch.nn.Linear(2, 2)},
                             run_opts=dict(options))
        assert (brain.precision, brain.eval_precision) == (expected, expected)
        with brain.training_ctx:
            dtype = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        assert dtype == (torch.float32 if expected == "fp32" else torch.bfloat16)
    assert "has no native bf16 (avx512_bf16/AMX): running fp32" in capsys.readouterr().out
