"""Which number format a model runs in: fp32, bf16 (autocast) or int8 (an ONNX graph).

``fp32`` is PyTorch as trained. ``bf16`` runs the embedding model under
``torch.autocast`` with ``torch.bfloat16`` (matrix products and convolutions
in bf16, accumulated in fp32), while the log-mel features and their
normalisation stay in fp32 (see :class:`BF16Embedding`; why: docs/using.md,
"Precision"). ``int8`` is a quantised ONNX graph
(:mod:`dmha_modules.folders.quantize`).

bf16 is fast only where the hardware computes it: on x86 CPUs the
``avx512_bf16`` or ``amx_bf16`` instructions (``/proc/cpuinfo`` flags);
elsewhere PyTorch emulates it, slower than fp32. :func:`resolve_precision`
therefore turns ``bf16`` into ``fp32`` on a CPU without them, with one line
saying so. Developers can force the bf16 computation on any CPU (to check
its accuracy, as the tests do) with the environment variable
``DMHA_FORCE_BF16=1``.

Example
-------
>>> resolve_precision("bf16", "cpu", flags={"avx2", "fma"})
('fp32', 'this CPU (flags avx2 fma) has no native bf16 (avx512_bf16/AMX): running fp32')
>>> resolve_precision("bf16", "cpu", flags={"avx512f", "avx512_bf16"})
('bf16', 'bf16 (torch.autocast on cpu; features and normalisation in fp32)')
>>> with precision_context("fp32", "cpu"):
...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
torch.float32
"""

import contextlib
import logging
import os

import torch

PRECISIONS = ("fp32", "bf16", "int8")
# The /proc/cpuinfo flags of x86 CPUs that compute bf16 natively.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Flags worth naming when saying what a CPU can do.
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16",
               "amx_bf16", "amx_int8")
FORCE_BF16_VARIABLE = "DMHA_FORCE_BF16"


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The instruction-set flags of the first CPU in ``cpuinfo`` (empty set where unreadable).

    Arguments
    ---------
    cpuinfo : str
        Linux's ``/proc/cpuinfo`` (or a file like it).

    Returns
    -------
    set of str

    Example
    -------
    >>> import tempfile
    >>> path = tempfile.mkstemp()[1]
    >>> _ = open(path, "w").write("processor : 0\\nflags\\t\\t: fpu avx2 fma\\n")
    >>> sorted(cpu_flags(path))
    ['avx2', 'fma', 'fpu']
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86, ARM
                    return set(value.split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16(flags=None):
    """Whether the CPU computes bf16 natively (``avx512_bf16`` or ``amx_bf16``).

    Arguments
    ---------
    flags : set of str, optional
        CPU flags; by default :func:`cpu_flags`.

    Returns
    -------
    bool

    Example
    -------
    >>> cpu_has_native_bf16({"avx2"}), cpu_has_native_bf16({"avx512f", "amx_bf16"})
    (False, True)
    """
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def bf16_forced():
    """Whether ``DMHA_FORCE_BF16=1`` asks for bf16 on any CPU (for developers' checks)."""
    return os.environ.get(FORCE_BF16_VARIABLE, "") == "1"


def _device_type(device):
    return torch.device(device).type


def resolve_precision(precision, device, flags=None):
    """The precision that will run, and one line saying what runs.

    ``bf16`` on a CPU without native bf16 becomes ``fp32`` (unless
    ``DMHA_FORCE_BF16=1``), and on a GPU without bf16 too.

    Arguments
    ---------
    precision : str
        ``fp32``, ``bf16`` or ``int8``.
    device : str
        Torch device.
    flags : set of str, optional
        CPU flags; by default :func:`cpu_flags`.

    Returns
    -------
    tuple
        ``(precision, line)``; the line is None for ``fp32`` asked for.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    if precision != "bf16":
        return precision, None
    kind = _device_type(device)
    if kind == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp32", f"{device} has no bf16: running fp32"
    if kind == "cpu" and not bf16_forced():
        flags = cpu_flags() if flags is None else flags
        if not cpu_has_native_bf16(flags):
            shown = " ".join(sorted(flag for flag in flags if flag in SHOWN_FLAGS)) or "unknown"
            return "fp32", (f"this CPU (flags {shown}) has no native bf16 "
                            "(avx512_bf16/AMX): running fp32")
    return "bf16", f"bf16 (torch.autocast on {kind}; features and normalisation in fp32)"


def precision_context(precision, device):
    """A context running PyTorch in ``precision``: ``torch.autocast`` for bf16, nothing for fp32.

    Arguments
    ---------
    precision : str
        ``fp32`` or ``bf16`` (as :func:`resolve_precision` returns it).
    device : str
        Torch device.

    Returns
    -------
    context manager

    Example
    -------
    >>> with precision_context("bf16", "cpu"):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    if precision == "bf16":
        return torch.autocast(_device_type(device), dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"PyTorch runs fp32 or bf16, not {precision!r}")


class BF16Embedding(torch.nn.Module):
    """An embedding model run under bf16 autocast, returning fp32 embeddings.

    Put in place of a model's ``embedding_model`` so that the features and
    their normalisation, computed before it, stay in fp32.

    Arguments
    ---------
    embedding_model : torch.nn.Module
        Called as ``embedding_model(feats, lengths)``.

    Example
    -------
    >>> model = BF16Embedding(torch.nn.Linear(4, 3))
    >>> model(torch.ones(2, 5, 4)).dtype
    torch.float32
    """

    def __init__(self, embedding_model):
        super().__init__()
        self.embedding_model = embedding_model

    def forward(self, x, lengths=None):
        """``embedding_model(x, lengths)`` under bf16 autocast, as float32."""
        with precision_context("bf16", x.device.type):
            if lengths is None:
                return self.embedding_model(x).float()
            return self.embedding_model(x, lengths).float()


def brain_precision(brain):
    """A SpeechBrain ``Brain``'s bf16 (``--precision`` / ``--eval_precision``) checked against the device.

    SpeechBrain runs ``--precision bf16`` on CPU under ``torch.autocast``
    whether or not the CPU computes bf16; on a CPU without native bf16 (see
    :func:`resolve_precision`) this sets the Brain back to fp32 and says so in
    one line (logged and printed). Call it after the Brain's ``__init__``.

    Arguments
    ---------
    brain : speechbrain.core.Brain

    Returns
    -------
    str or None
        The line said, if any.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> brain = SimpleNamespace(device="cpu", precision="fp32", eval_precision="fp32")
    >>> brain_precision(brain) is None
    True
    """
    from speechbrain.utils.autocast import TorchAutocast

    said = None
    for option, context in (("precision", "training_ctx"), ("eval_precision", "evaluation_ctx")):
        if getattr(brain, option) != "bf16":
            continue
        effective, line = resolve_precision("bf16", brain.device)
        said = line
        if effective == "fp32":
            setattr(brain, option, "fp32")
            setattr(brain, context, TorchAutocast(device_type=_device_type(brain.device),
                                                  dtype=torch.float32))
    if said:
        print(said)
        logging.getLogger(__name__).info(said)
    return said


def fp32_features(device):
    """A context computing features in fp32 inside a bf16 autocast region (see the module)."""
    return torch.autocast(_device_type(device), enabled=False)
