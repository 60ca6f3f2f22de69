"""Which int8 method: ONNX Runtime static QDQ variants, dynamic, and PyTorch's x86 path, measured.

For one model folder (with ``embedding.onnx``, ``dmha export --onnx``): CPU ms
per 3 s utterance at batch 1 and 16 (one thread, best of ``--repeats``; CPU
time of the process, as the machine is shared) and the
cosine of each method's embeddings to fp32 PyTorch on the whole files of
``--eval_list`` (batch 1), calibrated on ``--calibration_list``. Rows:

- ``fp32 torch``: the folder's PyTorch modules, as ``dmha embed`` runs them;
- ``fp32 onnx``: ``embedding.onnx`` in ONNX Runtime;
- ``dmha``: :func:`dmha_modules.folders.quantize.quantize_int8`, what
  ``dmha export --precision int8`` writes (QDQ, frame-layer convolutions, uint8
  activations x int8 weights in 7 bits);
- ``u8 frames``: the same convolutions with uint8 weights and activations (what
  dmha wrote until 2026-12-08);
- ``s8 all``: signed int8 weights and activations, every Conv / MatMul / Gemm
  after the features quantised (ONNX Runtime's default QDQ types);
- ``u8 all``: uint8 weights and activations, every Conv / MatMul / Gemm after
  the features;
- ``dynamic``: ``quantize_dynamic`` of MatMul / Gemm (weights int8, activations
  quantised at run time);
- ``torch fx x86`` (``--torch``): PyTorch's own x86 path in torch 2.11, FX
  graph mode static quantisation with the ``x86`` engine, on the embedding
  model (its pt2e ``X86InductorQuantizer`` now lives in ``torchao``, not
  installed).

    python bench/int8_methods.py --model MODEL --calibration_list cal.txt \\
        --eval_list eval.txt [--repeats 3] [--torch]
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import onnx
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dmha_modules.cli.inputs import listed_lines, load_model  # noqa: E402
from dmha_modules.folders.quantize import (  # noqa: E402
    _CalibrationReader, frame_convolutions, quantize_int8)
from dmha_modules.nn.embedding import load_utterance  # noqa: E402
from dmha_modules.nn.waveform import waveform_model  # noqa: E402

SECONDS = 3.0


def ort_session(path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda wavs: session.run(["embeddings"], {
        "wavs": np.ascontiguousarray(wavs, np.float32),
        "lengths": np.ones(len(wavs), np.float32)})[0]


def ms_per_utterance(embed, batch, rate, repeats):
    """CPU milliseconds of this process per utterance (one thread): load inflates it less than wall time."""
    wavs = (np.random.default_rng(0).random((batch, int(SECONDS * rate)), np.float32) - 0.5) * 0.2
    embed(wavs)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        embed(wavs)
        best = min(best, time.process_time() - start)
    return 1000 * best / batch


def static_variant(pre, out, waveforms, signed, nodes):
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    kind = QuantType.QInt8 if signed else QuantType.QUInt8
    quantize_static(pre, out, _CalibrationReader(waveforms), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=kind, weight_type=kind,
                    calibrate_method=CalibrationMethod.MinMax, nodes_to_quantize=nodes,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"])


def onnx_rows(folder, work, calibration):
    """``{name: ONNX path}`` of every ONNX Runtime variant (those that load)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = os.path.join(folder, "embedding.onnx")
    pre = os.path.join(work, "pre.onnx")
    quant_pre_process(fp32, pre, skip_symbolic_shape=True)
    graph = onnx.load(pre)
    first = next(i for i, node in enumerate(graph.graph.node) if node.op_type == "Conv")
    after = [node.name for node in graph.graph.node[first:]
             if node.op_type in ("Conv", "MatMul", "Gemm")]
    rows = {"fp32 onnx": fp32}
    rows["dmha"] = os.path.join(work, "dmha.onnx")
    quantize_int8(fp32, rows["dmha"], calibration, "calibration")
    for name, signed, nodes in (("u8 frames", False, frame_convolutions(graph)),
                                ("s8 all", True, after), ("u8 all", False, after)):
        rows[name] = os.path.join(work, name.replace(" ", "_") + ".onnx")
        static_variant(pre, rows[name], calibration, signed, nodes)
    rows["dynamic"] = os.path.join(work, "dynamic.onnx")
    quantize_dynamic(pre, rows["dynamic"], op_types_to_quantize=["MatMul", "Gemm"],
                     weight_type=QuantType.QInt8, per_channel=False,
                     nodes_to_quantize=[n for n in after if n not in frame_convolutions(graph)])
    return rows


def torch_fx(model, calibration):
    """PyTorch's own x86 int8 path, ``embed(wavs)``: FX graph mode, static, the ``x86`` engine.

    torch 2.11's pt2e quantisers (``X86InductorQuantizer``) moved to the
    ``torchao`` package, which dmha does not install; FX graph mode is what
    torch itself still ships. The features and normalisation stay fp32.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    inner = waveform_model(model.mods).eval()

    def features(wavs):
        lengths = torch.ones(len(wavs))
        frame_lens = inner.compute_features.frame_lengths(lengths, wavs.shape[1])
        return inner.mean_var_norm(inner.compute_features(wavs, lengths), frame_lens), frame_lens

    with torch.no_grad():
        example = features(torch.from_numpy(calibration[0][None]))
        prepared = prepare_fx(inner.embedding_model, get_default_qconfig_mapping("x86"),
                              example_inputs=example)
        for wav in calibration:
            prepared(*features(torch.from_numpy(wav[None])))
        quantised = convert_fx(prepared)

    def embed(wavs):
        with torch.no_grad():
            return quantised(*features(torch.from_numpy(np.asarray(wavs, np.float32))))[:, 0].numpy()
    return embed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--calibration_list", required=True)
    parser.add_argument("--eval_list", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with load_model(args.model, "cpu") as model:
        rate = model.hparams.sample_rate
        calibration = [load_utterance(p, rate).numpy()
                       for _, _, p in listed_lines(args.calibration_list)]
        evaluation = [load_utterance(p, rate).numpy() for _, _, p in listed_lines(args.eval_list)]

        def fp32(wavs):
            with torch.no_grad():
                return model.embed(torch.from_numpy(np.asarray(wavs, np.float32)), None).numpy()

        rows = {"fp32 torch": fp32}
        with tempfile.TemporaryDirectory() as work:
            rows.update({name: ort_session(path)
                         for name, path in onnx_rows(args.model, work, calibration).items()})
            if args.torch:
                try:
                    rows["torch fx x86"] = torch_fx(model, calibration)
                except Exception as error:  # models FX cannot trace
                    print(f"| torch fx x86 | failed: {str(error).splitlines()[0][:100]} |")
            print(f"{args.model}: {len(calibration)} calibration files, {len(evaluation)} "
                  f"evaluation files; load average {os.getloadavg()[0]:.1f}")
            print("| method | CPU ms/utt b1 | CPU ms/utt b16 | cosine to fp32 min | mean |")
            print("|---|---|---|---|---|")
            reference = [fp32(wav[None])[0] for wav in evaluation]
            for name, embed in rows.items():
                try:
                    got = [embed(wav[None])[0] for wav in evaluation]
                    timing = [ms_per_utterance(embed, b, rate, args.repeats) for b in (1, 16)]
                except Exception as error:  # a variant ONNX Runtime cannot run
                    print(f"| {name} | failed: {str(error).splitlines()[0][:80]} | | | |")
                    continue
                cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
                       for a, b in zip(reference, got)]
                print(f"| {name} | {timing[0]:.1f} | {timing[1]:.1f} | {min(cos):.4f} | "
                      f"{np.mean(cos):.4f} |", flush=True)


if __name__ == "__main__":
    main()
