"""ONNX export of the whole embedding pipeline, waveforms to embeddings, and an ONNX Runtime embedder.

``export_onnx`` writes one ONNX graph computing
``embedding_model(mean_var_norm(compute_features(wavs, lengths), frame_lens), frame_lens)[:, 0]``
(eval mode) from padded mono waveforms ``wavs (B, samples)`` and relative
lengths ``lengths (B,)``, with dynamic batch and time axes. ``OnnxEmbedder``
runs such a file with ONNX Runtime, without PyTorch models.

How the graph is made (``torch.onnx.export(dynamo=True)``, i.e. ``torch.export``
with symbolic batch and time sizes):

- The log-mel features of ``LogMelFeatures`` are recomputed here from the
  module's own window, filters and settings with tensor operations only
  (pre-emphasis, ``unfold`` framing, ``rfft``, mel matrix, log): its
  ``forward`` loops in python over chunks of frames, which would fix the
  number of frames in the graph. ONNX has ``DFT``, so the waveform is the input.
- The front-end of a DMHA ``EmbeddingModel`` is called in one pass and always
  masks padding (the module itself skips masking when no utterance is padded,
  a data-dependent branch that the graph cannot hold); masking a full-length
  utterance multiplies by one, so the result is the same.
- Every copied module with a ``chunk_frames`` attribute gets ``None``, so no
  python loop over the input length is left.

Other embedding models are exported as they are. SpeechBrain's
``ECAPA_TDNN`` works: while tracing, its ``length_to_mask`` is swapped for one
that broadcasts instead of calling ``len(lengths)`` (which would fix the batch
size); the mask is the same.

Every export is checked: the graph's input axes must be symbolic, and ONNX
Runtime must match PyTorch to ``TOLERANCE`` on the example batch and on a
second batch of another size and length, relative to the largest embedding
value when that is above 1 (float32 sums err in proportion to their size:
a paper-size model with values up to 20 differs by about 1.3e-4); otherwise
nothing is written. The graph computes all frames at once (no chunking), so its memory
grows with the input length: cut hours of audio into pieces.
"""

import contextlib
import copy
import logging
import os
import sys
import warnings

import numpy as np
import torch

from dmha_modules.io.atomic import atomic_paths
from dmha_modules.nn.front_ends import ConvFrontEnd
from dmha_modules.nn.features import LogMelFeatures
from dmha_modules.nn.embedding import embed_waveforms
from dmha_modules.nn.masks import frame_mask, relative_to_steps
from dmha_modules.nn.models import EmbeddingModel

INPUT_NAMES = ("wavs", "lengths")
OUTPUT_NAME = "embeddings"
TOLERANCE = 1e-4
TRACE_MIN_FRAMES = 32


class _OnePassFrontEnd(torch.nn.Module):
    """A ``ConvFrontEnd`` encoding in one pass and always masking the padding."""

    def __init__(self, front_end):
        super().__init__()
        self.front_end = front_end
        self.output_size = front_end.output_size

    def forward(self, x, lengths):
        """Encodes features ``(B, T, F)`` with relative ``lengths`` into ``(B, T', D)``."""
        return self.front_end.encode_frames(x, relative_to_steps(lengths, x.shape[1]))

    def output_lengths(self, lengths, num_frames):
        """Relative output lengths, as the wrapped front-end computes them."""
        return self.front_end.output_lengths(lengths, num_frames)


def _log_mel(compute_features, wavs, lengths):
    """``LogMelFeatures`` in one pass and relative frame lengths, shapes kept symbolic.

    ``LogMelFeatures.frame_lengths`` takes the padded frame count from Python
    integer arithmetic, which would fix the time axis of the graph; here it
    comes from the features tensor.
    """
    feats = compute_features.log_mel(wavs)
    samples = torch.round(lengths * wavs.shape[1]).long()
    frame_lens = compute_features.num_frames(samples).float() / feats.shape[1]
    feats = feats * frame_mask(frame_lens, feats.shape[1]).unsqueeze(-1)
    return feats, frame_lens


class _WaveformEmbedder(torch.nn.Module):
    """The exported computation: waveforms and relative lengths to embeddings ``(B, E)``."""

    def __init__(self, compute_features, mean_var_norm, embedding_model):
        super().__init__()
        self.compute_features = compute_features
        self.mean_var_norm = mean_var_norm
        self.embedding_model = embedding_model

    def forward(self, wavs, lengths):
        """Embeds waveforms ``(B, samples)`` with relative ``lengths`` ``(B,)``."""
        if isinstance(self.compute_features, LogMelFeatures):
            feats, frame_lens = _log_mel(self.compute_features, wavs, lengths)
        else:
            feats = self.compute_features(wavs, lengths)
            frame_lens = self.compute_features.frame_lengths(lengths, wavs.shape[1])
        feats = self.mean_var_norm(feats, frame_lens)
        return self.embedding_model(feats, frame_lens)[:, 0]


def _length_to_mask(length, max_len=None, dtype=None, device=None):
    """SpeechBrain's ``length_to_mask`` by broadcasting, without ``len(length)``.

    SpeechBrain's expands to ``len(length)`` rows, a python number that fixes
    the batch size of a traced graph; this gives the same mask.
    """
    if max_len is None:
        max_len = length.max().long().item()
    mask = torch.arange(max_len, device=length.device, dtype=length.dtype) < length.unsqueeze(1)
    return torch.as_tensor(
        mask,
        dtype=length.dtype if dtype is None else dtype,
        device=length.device if device is None else device,
    )


@contextlib.contextmanager
def _export_context():
    """Tracing settings: ECAPA-TDNN's ``length_to_mask`` replaced, exporter chatter silenced.

    SpeechBrain's ECAPA-TDNN module (if imported) gets ``_length_to_mask`` in
    place of its ``length_to_mask`` until the context ends; the exporter's
    notes that do not concern the user (torchvision missing, pytree
    deprecations, axis renaming) are not shown.
    """
    ecapa = sys.modules.get("speechbrain.lobes.models.ECAPA_TDNN")
    original = getattr(ecapa, "length_to_mask", None)
    # "torchvision is not installed. Skipping torchvision::nms" and the like.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    if original is not None:
        ecapa.length_to_mask = _length_to_mask
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
            warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
            yield
    finally:
        registration.setLevel(level)
        if original is not None:
            ecapa.length_to_mask = original


def _reference(compute_features, mean_var_norm, embedding_model, wavs, lengths):
    """The PyTorch computation the ONNX graph must reproduce."""
    modules = torch.nn.ModuleDict(dict(compute_features=compute_features,
                                       mean_var_norm=mean_var_norm,
                                       embedding_model=embedding_model))
    with torch.no_grad():
        return embed_waveforms(modules, wavs, lengths)[:, 0]


def _cpu_eval_copy(module):
    """A CPU copy of ``module`` in eval mode (the caller's module is left as it is)."""
    return None if module is None else copy.deepcopy(module).cpu().eval()


def _export_copies(compute_features, mean_var_norm, embedding_model):
    """Copies to export: no chunking loops, and a one-pass front-end for ``EmbeddingModel``."""
    modules = [_cpu_eval_copy(m) for m in (compute_features, mean_var_norm, embedding_model)]
    for module in modules:
        for sub in [] if module is None else module.modules():
            if hasattr(sub, "chunk_frames"):
                sub.chunk_frames = None
    if isinstance(modules[2], EmbeddingModel) and isinstance(
        modules[2].front_end, ConvFrontEnd
    ):
        modules[2].front_end = _OnePassFrontEnd(modules[2].front_end)
    return _WaveformEmbedder(*modules).eval()


def _example_batch(num_samples, relative_lengths, seed):
    """Noise waveforms ``(B, num_samples)`` with zeroed padding, and their lengths."""
    generator = torch.Generator().manual_seed(seed)
    wavs = 0.1 * torch.randn(len(relative_lengths), num_samples, generator=generator)
    lengths = torch.tensor(relative_lengths, dtype=torch.float32)
    steps = relative_to_steps(lengths, num_samples)
    wavs = wavs * (torch.arange(num_samples) < steps[:, None])
    return wavs, lengths


def _samples_for_frames(compute_features, frames):
    """Waveform samples giving ``frames`` frames (1 without frame and hop sizes)."""
    frame_length = getattr(compute_features, "frame_length", None)
    hop_length = getattr(compute_features, "hop_length", None)
    if frame_length is None or hop_length is None:
        return 1
    return int(frame_length + (frames - 1) * hop_length)


def _check_dynamic_inputs(path):
    """Raises if a batch or time axis of the graph's inputs was fixed to a number."""
    import onnx

    graph = onnx.load(path, load_external_data=False).graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        fixed = [i for i, dim in enumerate(dims) if not dim.dim_param]
        if fixed:
            shape = [dim.dim_param or dim.dim_value for dim in dims]
            raise RuntimeError(
                f"ONNX export fixed axes {fixed} of input {value.name!r} (shape {shape}): "
                "the model's code turns a size into a python number (e.g. len(tensor) "
                "or a loop over frames), so the graph would only take that size."
            )


def export_onnx(compute_features, mean_var_norm, embedding_model, path, example_seconds=3.0):
    """Writes an ONNX graph from padded mono waveforms to embeddings, and checks it.

    The graph takes ``wavs`` ``(B, samples)`` float32 in [-1, 1] at
    ``compute_features.sample_rate`` and relative lengths ``lengths`` ``(B,)``
    in [0, 1] (both axes dynamic) and returns ``embeddings`` ``(B, E)``: the
    eval-mode result of ``embedding_model(mean_var_norm(compute_features(wavs,
    lengths), frame_lens), frame_lens)[:, 0]``, with ``frame_lens =
    compute_features.frame_lengths(lengths, wavs.shape[1])``. The file is
    written to a temporary name beside ``path``, run with ONNX Runtime (CPU)
    on the example batch and on a second batch of another size and length, and
    moved to ``path`` only if it matches PyTorch (``TOLERANCE``, see the
    module). The modules passed are not changed (copies are exported, on CPU).

    Arguments
    ---------
    compute_features : LogMelFeatures
        Feature extractor; its ``sample_rate`` is the graph's.
    mean_var_norm : torch.nn.Module
        Normalisation called as ``mean_var_norm(feats, frame_lens)``
        (``UtteranceNorm``).
    embedding_model : torch.nn.Module
        Called as ``embedding_model(feats, frame_lens)`` -> ``(B, 1, E)``: a DMHA
        ``EmbeddingModel`` (any front-end and pooling) or SpeechBrain's
        ``ECAPA_TDNN``.
    path : str
        Output ``.onnx`` file (weights inside it: the model must be under 2 GB).
    example_seconds : float
        Length of the example batch the graph is traced and checked with.

    Returns
    -------
    float
        Largest absolute difference between ONNX Runtime and PyTorch over the
        check batches.

    Example
    -------
    >>> import tempfile
    >>> from dmha_modules.nn.features import UtteranceNorm
    >>> model = EmbeddingModel(front_end="VGG3L", channels=8, pooling="Attention", emb_dim=8)
    >>> path = os.path.join(tempfile.mkdtemp(), "embedding.onnx")
    >>> export_onnx(LogMelFeatures(), UtteranceNorm(), model, path, example_seconds=0.5) <= TOLERANCE
    True
    >>> OnnxEmbedder(path)(torch.rand(3, 12345) - 0.5, torch.tensor([1.0, 0.5, 0.2])).shape
    torch.Size([3, 8])
    """
    sample_rate = int(compute_features.sample_rate)
    min_samples = int(getattr(compute_features, "frame_length", 1))
    trace_min_samples = max(
        min_samples, _samples_for_frames(compute_features, TRACE_MIN_FRAMES)
    )
    exported = _export_copies(compute_features, mean_var_norm, embedding_model)
    reference = [
        _cpu_eval_copy(m) for m in (compute_features, mean_var_norm, embedding_model)
    ]
    num_samples = max(int(round(example_seconds * sample_rate)), trace_min_samples)
    checks = _check_batches(num_samples, min_samples)
    expected = [_reference(*reference, *check) for check in checks]
    program = _trace(exported, checks[0], trace_min_samples, type(embedding_model).__name__)
    program.model.metadata_props.update(
        {
            "dmha.sample_rate": str(sample_rate),
            "dmha.min_samples": str(min_samples),
            "dmha.embedding_size": str(int(expected[0].shape[1])),
            "dmha.embedding_model": type(embedding_model).__name__,
        }
    )
    with atomic_paths(path) as (temporary,):
        program.save(temporary, external_data=False)
        _check_dynamic_inputs(temporary)
        max_diff = _max_difference(temporary, checks, expected)
        largest = max(float(want.abs().max()) for want in expected)
        if not max_diff <= TOLERANCE * max(1.0, largest):
            raise RuntimeError(
                f"ONNX Runtime differs from PyTorch by up to {max_diff:.3g} "
                f"(tolerance {TOLERANCE} x the largest embedding value, {largest:.3g}); "
                f"{path} not written"
            )
    return max_diff


def _check_batches(num_samples, min_samples):
    """The example batch (``num_samples`` long) and a second batch to check the graph on."""
    wavs, lengths = _example_batch(num_samples, [1.0, 0.61], seed=0)
    # A second batch: another batch size, an odd length ~0.55 of the example.
    check_samples = max(int(num_samples * 0.55) | 1, min_samples)
    return [
        (wavs, lengths),
        _example_batch(check_samples, [0.83, 1.0, 0.37], seed=1),
    ]


def _trace(exported, example, trace_min_samples, model_name):
    """The ONNX program of ``exported`` traced on ``example``, batch and time axes dynamic."""
    batch = torch.export.Dim("batch", min=1)
    # The graph is traced for inputs of at least TRACE_MIN_FRAMES frames: below
    # some frames the tracer finds size-1 special cases (broadcasting, pooling)
    # and would retrace. ONNX operators have no such special cases, so
    # shorter inputs, down to one window, run the same graph (tested).
    time = torch.export.Dim("time", min=trace_min_samples)
    try:
        with _export_context():
            return torch.onnx.export(
                exported,
                example,
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"wavs": {0: batch, 1: time}, "lengths": {0: batch}},
                verbose=False,
            )
    except Exception as error:
        raise RuntimeError(f"ONNX export of {model_name} failed: {error}") from error


def _max_difference(path, checks, expected):
    """Largest absolute difference from ``expected`` of ``path``'s ONNX Runtime (CPU) outputs."""
    session = OnnxEmbedder(path, providers=["CPUExecutionProvider"])
    max_diff = 0.0
    for (check_wavs, check_lengths), want in zip(checks, expected):
        got = session(check_wavs, check_lengths)
        if got.shape != want.shape:
            raise RuntimeError(
                f"ONNX output shape {tuple(got.shape)} differs from PyTorch's "
                f"{tuple(want.shape)} for input {tuple(check_wavs.shape)}"
            )
        max_diff = max(max_diff, float((got - want).abs().max()))
    return max_diff


def _as_numpy(values, dtype):
    """A contiguous numpy array of ``dtype`` from a tensor, array or list."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=dtype)


class OnnxEmbedder:
    """Embeds padded waveforms with an ``export_onnx`` graph in ONNX Runtime.

    Runs on CUDA when ONNX Runtime has its CUDA provider, else on CPU.

    Arguments
    ---------
    path : str
        ONNX file written by ``export_onnx``.
    num_threads : int, optional
        Threads ONNX Runtime uses within an operator; None for its default.
    providers : list of str, optional
        ONNX Runtime execution providers, in order of preference; by default
        ``CUDAExecutionProvider`` if available, then ``CPUExecutionProvider``.

    Example
    -------
    >>> embed = OnnxEmbedder("model/embedding.onnx")  # doctest: +SKIP

    A stand-in graph with the same inputs and output (the largest sample),
    written by hand; ``export_onnx`` writes real ones:

    >>> import tempfile, onnx
    >>> from onnx import TensorProto, helper
    >>> inputs = [helper.make_tensor_value_info("wavs", TensorProto.FLOAT, ["B", "T"]),
    ...           helper.make_tensor_value_info("lengths", TensorProto.FLOAT, ["B"])]
    >>> output = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["B", 1])
    >>> node = helper.make_node("ReduceMax", ["wavs"], ["embeddings"], axes=[1])
    >>> graph = helper.make_graph([node], "largest_sample", inputs, [output])
    >>> path = os.path.join(tempfile.mkdtemp(), "largest_sample.onnx")
    >>> onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
    ...                             ir_version=8), path)
    >>> embed = OnnxEmbedder(path, num_threads=1)
    >>> embed(torch.tensor([[0.1, 0.5, -0.2], [0.3, 0.0, 0.0]]), torch.tensor([1.0, 0.3]))
    tensor([[0.5000],
            [0.3000]])
    """

    def __init__(self, path, num_threads=None, providers=None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        if providers is None:
            available = onnxruntime.get_available_providers()
            providers = [
                name
                for name in ("CUDAExecutionProvider", "CPUExecutionProvider")
                if name in available
            ]
        self.session = onnxruntime.InferenceSession(
            os.fspath(path), sess_options=options, providers=providers
        )
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.sample_rate = int(metadata.get("dmha.sample_rate", 0)) or None
        self.min_samples = int(metadata.get("dmha.min_samples", 1))
        self.embedding_size = int(metadata.get("dmha.embedding_size", 0)) or None

    def __call__(self, wavs, lengths=None):
        """Embeds a padded batch.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms ``(B, samples)`` (or one ``(samples,)``) in [-1, 1], at
            ``sample_rate``; numpy arrays are accepted too.
        lengths : torch.Tensor, optional
            Relative lengths ``(B,)`` in [0, 1]; None for all ones.

        Returns
        -------
        torch.Tensor
            Embeddings ``(B, E)``, float32, on CPU.
        """
        wavs = _as_numpy(wavs, np.float32)
        if wavs.ndim == 1:
            wavs = wavs[None]
        if wavs.ndim != 2:
            raise ValueError(f"wavs must be (batch, samples), got shape {wavs.shape}")
        if lengths is None:
            lengths = np.ones(len(wavs), dtype=np.float32)
        lengths = _as_numpy(lengths, np.float32).reshape(-1)
        if len(lengths) != len(wavs):
            raise ValueError(f"{len(lengths)} lengths for {len(wavs)} waveforms")
        if wavs.shape[1] < self.min_samples:
            raise ValueError(
                f"Waveforms of {wavs.shape[1]} samples are shorter than one "
                f"{self.min_samples}-sample window."
            )
        (embeddings,) = self.session.run(
            [OUTPUT_NAME], {INPUT_NAMES[0]: wavs, INPUT_NAMES[1]: lengths}
        )
        return torch.from_numpy(embeddings)
