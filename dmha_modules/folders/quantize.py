"""int8 embeddings: the ONNX export (``embedding.onnx``) quantised with ONNX Runtime's tools.

``quantize_int8`` writes ``embedding_int8.onnx`` beside a model folder's
``embedding.onnx`` (:func:`dmha_modules.folders.onnx_export.export_onnx`),
with ONNX Runtime's static quantisation in the QDQ format: the graph is first
optimised (``quant_pre_process``: BatchNorms folded into the convolutions),
then the weights of the frame layers' convolutions (where nearly all the
computation is) are quantised to 8 bits per output channel, and their inputs
to 8 bits with ranges measured on audio the user names (the calibration list;
there is no default). Activations are unsigned (uint8), weights signed with
7 bits of range (int8, ``reduce_range``): ONNX Runtime's x86 kernels add
pairs of uint8 x int8 products in 16 bits, which saturate on CPUs without
VNNI (AVX2) with full-range weights (255 x 127 x 2 > 32767) and fit with
7-bit ones; u8s8 is also the kernels' fastest pair (measured: docs/speed.md). What stays in fp32, and why (measured:
docs/using.md, "Precision"):

- the log-mel features and their normalisation, every node before the first
  convolution: a log of quantised power spectra loses the quiet bands;
- the attention pooling and the embedding layers, from the first matrix
  product or softmax after the convolutions on (:func:`frame_convolutions`):
  quantised, they took the default model's worst cosine to fp32 on
  LibriSpeech from 0.999 to 0.98, for a few percent of the computation;
- the operations between the convolutions (additions, activations,
  BatchNorms not folded), computed by ONNX Runtime on dequantised values.

The graph keeps the inputs and output of ``embedding.onnx``, so
:class:`dmha_modules.folders.onnx_export.OnnxEmbedder` runs it, with ONNX
Runtime alone. Beside it, ``embedding_int8.json`` records how it was made
(method, calibration list, its file count, date, and the cosine of its
embeddings to fp32 on the calibration files), which ``dmha`` prints before
running it (:func:`describe`). Both files are written together, atomically.

Example
-------
>>> describe({"method": METHOD, "calibration_list": "cal.txt", "calibration_files": 200})
'int8 (ONNX Runtime, static QDQ, calibrated on 200 files of cal.txt)'
"""

import datetime
import json
import os

import numpy as np

from dmha_modules.io.atomic import atomic_paths

INT8_FILE = "embedding_int8.onnx"
INT8_RECORD = "embedding_int8.json"
METHOD = "ONNX Runtime, static QDQ"
# Where the frame layers end: the first of these after the first Conv (attention pooling).
POOLING_STARTS = ("MatMul", "Gemm", "Einsum", "Softmax")


def frame_convolutions(model):
    """Names of the ``Conv`` nodes of an ONNX ``model`` between its features and its pooling.

    The frame layers: every ``Conv`` from the first one up to the first
    ``MatMul``, ``Gemm``, ``Einsum`` or ``Softmax`` after it (attention
    pooling starts there). What comes before (the features and their
    normalisation) and after (pooling, embedding layers) is left out.

    Arguments
    ---------
    model : onnx.ModelProto

    Returns
    -------
    list of str

    Example
    -------
    >>> from onnx import helper
    >>> ops = ["MatMul", "Log", "Conv", "Relu", "Conv", "Einsum", "Softmax", "Conv"]
    >>> nodes = [helper.make_node(op, [], [], name=f"{op}{i}") for i, op in enumerate(ops)]
    >>> frame_convolutions(helper.make_model(helper.make_graph(nodes, "g", [], [])))
    ['Conv2', 'Conv4']
    """
    names = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            names.append(node.name)
        elif names and node.op_type in POOLING_STARTS:
            break
    return names


class _CalibrationReader:
    """ONNX Runtime's calibration data: one ``{wavs, lengths}`` feed per waveform."""

    def __init__(self, waveforms):
        self.waveforms = iter(waveforms)

    def __iter__(self):
        return iter(self.get_next, None)

    def get_next(self):
        """The next feed; None after the last."""
        wav = next(self.waveforms, None)
        if wav is None:
            return None
        return {"wavs": np.asarray(wav, np.float32)[None], "lengths": np.ones(1, np.float32)}


def _session(path):
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def _cosines(fp32_path, int8_path, waveforms):
    """Cosines between the two graphs' embeddings of each waveform."""
    sessions = [_session(fp32_path), _session(int8_path)]
    cosines = []
    for wav in waveforms:
        feed = _CalibrationReader([wav]).get_next()
        a, b = (session.run(["embeddings"], feed)[0][0] for session in sessions)
        cosines.append(float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
    return cosines


def _quantize(fp32_path, temporary, waveforms):
    """ONNX Runtime's pre-processing and static QDQ quantisation of ``fp32_path`` to ``temporary``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    optimised = temporary + ".pre.onnx"
    try:
        quant_pre_process(fp32_path, optimised, skip_symbolic_shape=True)
        model = onnx.load(optimised)
        quantize_static(
            optimised, temporary, _CalibrationReader(waveforms),
            quant_format=QuantFormat.QDQ, per_channel=True,
            # uint8 activations x int8 weights in 7 bits: see the module docstring.
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["Conv"],
            nodes_to_quantize=frame_convolutions(model),
        )
    finally:
        if os.path.exists(optimised):
            os.remove(optimised)
    quantised = onnx.load(temporary)
    source = {prop.key: prop.value for prop in onnx.load(fp32_path).metadata_props}
    source["dmha.precision"] = "int8"
    onnx.helper.set_model_props(quantised, source)
    onnx.save(quantised, temporary)


def quantize_int8(fp32_path, int8_path, waveforms, calibration_list):
    """Writes the int8 graph of ``fp32_path`` and its record (``INT8_RECORD`` beside it).

    Arguments
    ---------
    fp32_path : str
        An ``embedding.onnx`` written by ``export_onnx``.
    int8_path : str
        The int8 graph to write.
    waveforms : sequence of numpy.ndarray
        The calibration audio, mono at the graph's sample rate, one array per
        file (iterated twice: calibration, then the cosine check).
    calibration_list : str
        The list file they were read from (recorded by name).

    Returns
    -------
    dict
        The record written beside ``int8_path`` (see :func:`describe`).

    Example
    -------
    >>> import tempfile, torch
    >>> from dmha_modules.nn.features import LogMelFeatures, UtteranceNorm
    >>> from dmha_modules.nn.models import EmbeddingModel
    >>> from dmha_modules.folders.onnx_export import export_onnx
    >>> folder = tempfile.mkdtemp()
    >>> fp32 = os.path.join(folder, "embedding.onnx")
    >>> model = EmbeddingModel(front_end="VGG3L", channels=8, pooling="Attention", emb_dim=8)
    >>> _ = export_onnx(LogMelFeatures(), UtteranceNorm(), model.eval(), fp32, example_seconds=0.5)
    >>> waves = [np.random.RandomState(i).uniform(-0.3, 0.3, 8000) for i in range(3)]
    >>> record = quantize_int8(fp32, os.path.join(folder, INT8_FILE), waves, "cal.txt")
    >>> record["calibration_files"], sorted(os.listdir(folder))
    (3, ['embedding.onnx', 'embedding_int8.json', 'embedding_int8.onnx'])
    """
    waveforms = list(waveforms)
    record_path = os.path.join(os.path.dirname(os.path.abspath(int8_path)), INT8_RECORD)
    with atomic_paths(int8_path, record_path) as (temporary, temporary_record):
        _quantize(fp32_path, temporary, waveforms)
        cosines = _cosines(fp32_path, temporary, waveforms)
        record = {
            "precision": "int8",
            "method": METHOD,
            "quantised": "the convolutions of the frame layers (int8 weights per channel, "
                         "7-bit range, uint8 activations)",
            "kept_in_fp32": "log-mel features and normalisation; pooling and embedding "
                            "layers; the operations between the convolutions",
            "calibration_list": os.path.basename(calibration_list),
            "calibration_files": len(waveforms),
            "date": datetime.date.today().isoformat(),
            "cosine_to_fp32_on_calibration_files": {
                "min": round(min(cosines), 6), "mean": round(float(np.mean(cosines)), 6)},
        }
        with open(temporary_record, "x", encoding="utf-8") as out:
            json.dump(record, out, indent=2)
            out.write("\n")
    return record


def read_record(folder):
    """The ``INT8_RECORD`` of a model folder as a dict; None without one (or unreadable)."""
    path = os.path.join(folder, INT8_RECORD)
    try:
        with open(path, encoding="utf-8") as record:
            loaded = json.load(record)
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def describe(record):
    """One line saying what an int8 graph is, from its record (None: no record)."""
    if not record:
        return f"int8 ({INT8_FILE}; no {INT8_RECORD} says how it was made)"
    return (f"int8 ({record.get('method', 'unknown method')}, calibrated on "
            f"{record.get('calibration_files', '?')} files of "
            f"{record.get('calibration_list', '?')})")
