"""Matrix-product peaks of the engines ``bench/speed.py`` times, and its clock.

Each row of ``bench/speed.py`` measures the peak of the engine and number
format that runs it, in its own process: PyTorch's ``torch.mm`` in fp32 or
bf16, ONNX Runtime's fp32 ``MatMul`` or its ``MatMulInteger`` on the integer
types of the int8 graph (:func:`int8_types`).
"""

import time

import numpy as np
import torch

# --clock: wall-clock time, or the process's CPU time (with --threads 1, the time the work
# takes on one core whatever else the machine runs; on a shared machine, the steadier one).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def best_seconds(fn, repeats):
    """Best time (``clock``) of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def torch_peak(dtype, sizes, repeats):
    """Best GFLOP/s of square ``torch.mm`` products of ``dtype`` into a preallocated output."""
    best = 0.0
    for size in sizes:
        a, b, out = (torch.randn(size, size).to(dtype) for _ in range(3))
        seconds = best_seconds(lambda: torch.mm(a, b, out=out), repeats)
        best = max(best, 2 * size**3 / seconds / 1e9)
    return best


def ort_peak(types, sizes, repeats, threads):
    """Best GOP/s of ONNX Runtime's ``MatMulInteger`` on ``types`` (e.g. ``("uint8", "int8")``,
    int32 out) or, for ``None``, of its fp32 ``MatMul``."""
    import onnxruntime
    from onnx import TensorProto, helper

    kinds = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8, None: TensorProto.FLOAT}
    inputs = [helper.make_tensor_value_info(n, kinds[t], ["N", "N"])
              for n, t in zip("ab", types or (None, None))]
    out = helper.make_tensor_value_info("c", TensorProto.INT32 if types else TensorProto.FLOAT,
                                        ["N", "N"])
    node = helper.make_node("MatMulInteger" if types else "MatMul", ["a", "b"], ["c"])
    model = helper.make_model(helper.make_graph([node], "mm", inputs, [out]),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    best = 0.0
    rng = np.random.default_rng(0)
    for size in sizes:
        a, b = (rng.integers(0 if t == "uint8" else -128, 128, (size, size)).astype(t) if t
                else rng.standard_normal((size, size)).astype(np.float32)
                for t in types or (None, None))
        seconds = best_seconds(lambda: session.run(None, {"a": a, "b": b}), repeats)
        best = max(best, 2 * size**3 / seconds / 1e9)
    return best


def int8_types(path):
    """``(activation, weight)`` integer types of a QDQ graph's first quantised ``Conv``."""
    import onnx

    model = onnx.load(path)
    initial = {t.name: onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name
               for t in model.graph.initializer}
    produced = {n.output[0]: n for n in model.graph.node}
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[0] in produced:
            act, weight = (produced.get(name) for name in node.input[:2])
            if act is not None and act.op_type == "DequantizeLinear" and weight is not None:
                return initial.get(act.input[2]) or "uint8", initial.get(weight.input[0], "int8")
    return "uint8", "int8"


def engine_peak(precision, repeats, native_bf16, int8_path=None):
    """The matrix-product peak of the engine and format that runs ``precision``; its label."""
    threads = torch.get_num_threads()
    if precision == "fp32":
        return torch_peak(torch.float32, (2048, 4096), repeats), "torch.mm fp32, 2048-4096"
    if precision == "bf16":
        # PyTorch's emulated bf16 product takes minutes at 2048: a smaller size there.
        sizes = (2048, 4096) if native_bf16 else (512,)
        label = "2048-4096" if native_bf16 else "512, emulated"
        return torch_peak(torch.bfloat16, sizes, repeats), f"torch.mm bf16, {label}"
    if precision == "int8":
        # The kernel the quantised graph runs: its activation and weight types.
        types = int8_types(int8_path)
        return (ort_peak(types, (2048, 4096), repeats, threads),
                f"ORT MatMulInteger {types[0]} x {types[1]}, 2048-4096")
    return ort_peak(None, (2048, 4096), repeats, threads), "ORT MatMul fp32, 2048-4096"
