"""A model folder is code: checking its ``hyperparams.yaml`` before anything in it runs.

SpeechBrain's ``from_hparams`` (and ``recipes/train.py``) load
``hyperparams.yaml`` with HyperPyYAML, which imports and calls whatever the
file's tags name: ``!apply:os.system ["..."]`` runs a shell command, and so do
``!new:``, ``!name:`` and Python object tags of the wrong callables.
:func:`check_hyperparams` reads the file without running anything and refuses
every tag a dmha model folder or training folder does not legitimately hold:

- ``!new:`` and ``!name:`` name classes defined in ``dmha_modules``,
  ``speechbrain`` or ``torch`` (not in their private modules, nor in their
  parts that load or run code given to them: :data:`CODE_RUNNING`);
  ``!name:`` may also name the data preparation functions of
  :mod:`dmha_modules.prepare`;
- ``!apply:`` (and ``!applyref:``) call only :data:`SAFE_CALLS`;
- ``!ref`` and ``!copy`` refer to keys, never to an attribute (``<a.b>``, which
  would reach any object's insides);
- ``!tuple`` and tuple-like strings ``(...)`` hold plain values (HyperPyYAML
  reads them with PyYAML's unsafe loader);
- plain YAML values and ``!PLACEHOLDER``; nothing else (no ``!module:``, no
  ``!include:`` of unchecked files, no ``!!python/...`` tags).

The file is checked as written and again with its references resolved (as
HyperPyYAML loads it), so no value can be assembled into a tag. Checkpoint
files are not code: SpeechBrain reads them with ``torch.load``, which by
default (PyTorch >= 2.6) refuses anything but tensors.

Example
-------
>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "hyperparams.yaml")
>>> with open(path, "w") as f:
...     _ = f.write("sample_rate: 16000\\n"
...                 "norm: !new:dmha_modules.nn.features.UtteranceNorm\\n"
...                 "pwn: !apply:os.system [touch X]\\n")
>>> check_hyperparams(path)
Traceback (most recent call last):
...
dmha_modules.folders.safety.UnsafeModelError: ...hyperparams.yaml:3: !apply:os.system calls os.system; ...
"""

import inspect
import io
import os
import pickle
import pydoc
import re

import ruamel.yaml
import yaml
from hyperpyyaml import resolve_references

# Packages whose classes a model folder may build.
SAFE_PACKAGES = ("dmha_modules", "speechbrain", "torch")
# Their parts that load, fetch or run code or files given to them.
CODE_RUNNING = (
    "dmha_modules.cli", "dmha_modules.folders.safety", "speechbrain.inference",
    "speechbrain.pretrained", "speechbrain.utils.fetching", "speechbrain.utils.superpowers",
    "speechbrain.utils.importutils", "torch.distributed", "torch.hub", "torch.jit",
    "torch.multiprocessing", "torch.ops", "torch.package", "torch.utils.cpp_extension",
)
# Functions ``!name:`` may name: the data preparation the recipes' YAML calls.
SAFE_FUNCTIONS = ("dmha_modules.prepare",)
# What ``!apply:`` may call: the training YAML's seed and model choice.
SAFE_CALLS = ("operator.call", "operator.getitem", "speechbrain.utils.seed.seed_everything")
_CORE = "tag:yaml.org,2002:"
_CORE_TAGS = {_CORE + name for name in (
    "str", "int", "float", "bool", "null", "seq", "map", "timestamp", "binary", "merge",
    "set", "omap", "pairs", "value")}
_TUPLE = re.compile(r"^\(.*\)$", re.DOTALL)  # HyperPyYAML's implicit tuples, any style
_REFERENCE = re.compile(r"<[^>]*>")


class ModelFolderError(ValueError):
    """A model folder that cannot be loaded; each line names the file.

    Arguments
    ---------
    problems : list of str
        One line each, ``file: what``.

    Example
    -------
    >>> print(ModelFolderError(["m/classifier.ckpt: no such file"]))
    m/classifier.ckpt: no such file
    """

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UnsafeModelError(ModelFolderError):
    """A ``hyperparams.yaml`` that would run code a dmha model folder never runs.

    Arguments
    ---------
    path : str
        The file.
    problems : list of str
        One line each, ``file:line: what``.

    Example
    -------
    >>> print(UnsafeModelError("m/hyperparams.yaml", ["m/hyperparams.yaml:3: ..."]))
    m/hyperparams.yaml:3: ...
    m/hyperparams.yaml: refused: it would run code that a dmha model folder never runs; load it only if you trust its author (trust_model=True, dmha --trust_model)
    """

    def __init__(self, path, problems):
        super().__init__(list(problems) + [
            f"{path}: refused: it would run code that a dmha model folder never runs; load "
            "it only if you trust its author (trust_model=True, dmha --trust_model)"
        ])


def _in_packages(name, packages):
    return any(name == package or name.startswith(package + ".") for package in packages)


def _buildable(name):
    """Whether the dotted ``name`` lies in the safe packages, in no private or code-running part."""
    return (_in_packages(name, SAFE_PACKAGES) and not _in_packages(name, CODE_RUNNING)
            and not any(part.startswith("_") for part in name.split(".")))


def _callable_problem(kind, name):
    """What is wrong with the callable a ``!new:`` / ``!name:`` / ``!apply:`` tag names, or None."""
    if kind in ("apply", "applyref"):
        if name in SAFE_CALLS:
            return None
        return f"calls {name}; !{kind}: may call only {', '.join(SAFE_CALLS)}"
    if not _buildable(name):
        return (f"names {name}, which is not a class of {', '.join(SAFE_PACKAGES)} "
                "(outside their private parts and those that load or run code)")
    try:
        found = pydoc.locate(name)
    except pydoc.ErrorDuringImport as error:
        return f"names {name}, which cannot be imported ({error.value})"
    where = getattr(found, "__module__", None) or ""
    # Where it is defined, not where it was reached (a module's imports are its attributes).
    if inspect.isclass(found) and _buildable(where):
        return None
    if kind == "name" and inspect.isfunction(found) and _in_packages(where, SAFE_FUNCTIONS):
        return None
    if found is None:
        return f"names {name}, which does not exist"
    return f"names {name} (defined in {where or 'no module'}), which is not a class it may build"


def _tuple_problem(text):
    """What is wrong with the inside of a tuple-like string, read as PyYAML's full loader would."""
    try:
        inside = yaml.compose("[" + text[1:-1] + "]", Loader=yaml.Loader)
    except yaml.YAMLError:
        return f"{text!r} reads as a tuple that cannot be checked"
    stack = [inside]
    while stack:
        node = stack.pop()
        if node.tag not in _CORE_TAGS:
            return f"{text!r} reads as a tuple holding the tag {node.tag}"
        if isinstance(node, yaml.MappingNode):
            stack += [item for pair in node.value for item in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
    return None


def _node_problem(node):
    """What is wrong with one YAML node, or None."""
    tag = node.tag or ""
    text = node.value if isinstance(node, ruamel.yaml.ScalarNode) else None
    if isinstance(text, str) and (tag == "!tuple" or _TUPLE.match(text)):
        problem = _tuple_problem(text)
        if problem or tag == "!tuple":
            return problem
    if tag in _CORE_TAGS or tag == "!PLACEHOLDER":
        return None
    if tag in ("!ref", "!copy"):
        attributes = [ref for ref in _REFERENCE.findall(str(text)) if "." in ref]
        return f"{tag} {attributes[0]} refers to an attribute" if attributes else None
    kind, _, name = tag[1:].partition(":")
    if tag.startswith("!") and kind in ("new", "name", "apply", "applyref") and name:
        problem = _callable_problem(kind, name)
        return None if problem is None else f"{tag} {problem}"
    if tag.startswith(_CORE + "python/"):
        return f"the Python object tag !!{tag[len(_CORE):]} runs arbitrary code"
    if kind in ("include", "module"):
        return f"{tag}: a model folder neither includes files nor names modules"
    return f"unknown tag {tag}"


def _walk(node, key=""):
    """Yields ``(node, key)`` of every node under ``node``, aliases once."""
    seen, stack = set(), [(node, key)]
    while stack:
        node, key = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node, key
        if isinstance(node, ruamel.yaml.MappingNode):
            for name, value in reversed(node.value):
                inner = f"{key}.{name.value}" if key else str(name.value)
                stack += [(value, inner), (name, inner)]
        elif isinstance(node, ruamel.yaml.SequenceNode):
            stack += [(item, f"{key}[{i}]") for i, item in reversed(list(enumerate(node.value)))]


def _problems(text, where):
    """``where(node, key)`` + problem of every bad node of the YAML ``text``."""
    root = ruamel.yaml.YAML().compose(io.StringIO(text))
    if root is None:
        return []
    return [f"{where(node, key)}: {problem}" for node, key in _walk(root)
            if (problem := _node_problem(node)) is not None]


def check_hyperparams(path, overrides=None):
    """Refuses a ``hyperparams.yaml`` that would run code a dmha model folder never runs.

    Nothing in the file is run: it is parsed, each tag checked (see the
    module docstring), then its references are resolved as HyperPyYAML
    resolves them and the result checked again. Run it before
    ``EncoderClassifier.from_hparams`` on a folder you did not write;
    :class:`dmha_modules.inference.DMHAClassifier` and every ``dmha``
    command run it themselves.

    Arguments
    ---------
    path : str
        The ``hyperparams.yaml`` (of a model folder or a training output folder).
    overrides : dict or str, optional
        The overrides it will be loaded with.

    Raises
    ------
    UnsafeModelError
        Listing every refused line (``file:line: what``).
    ModelFolderError
        When the file is not YAML that HyperPyYAML can resolve.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        problems = _problems(text, lambda node, key: f"{path}:{node.start_mark.line + 1}")
        if not problems:
            # Values resolved into others (``!ref (<a>)``) may read differently.
            resolved = resolve_references(io.StringIO(text), overrides).getvalue()
            problems = _problems(resolved, lambda node, key: f"{path}: {key or 'the file'}")
    except (ruamel.yaml.YAMLError, ValueError, KeyError) as error:
        raise ModelFolderError([f"{path}: not a readable hyperparams.yaml ({error})"]) from None
    if problems:
        raise UnsafeModelError(path, problems)



def check_finite(state, path):
    """Refuses weights holding NaN or infinity: such a model embeds everything as NaN.

    Arguments
    ---------
    state : dict
        A state dict (name -> tensor); other values are left alone.
    path : str
        The checkpoint file the weights come from or go to, for the message.

    Raises
    ------
    ModelFolderError
        Naming ``path`` and every tensor that is not finite.

    Example
    -------
    >>> import torch
    >>> check_finite({"w": torch.ones(2), "b": torch.tensor([1.0, float("nan")])}, "m/a.ckpt")
    Traceback (most recent call last):
    ...
    dmha_modules.folders.safety.ModelFolderError: m/a.ckpt: refused: tensor b holds 1 NaN or infinite value of 2 (a broken model: its outputs would be NaN)
    """
    import torch  # only where weights are checked

    problems = []
    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                problems.append(f"{path}: refused: tensor {name} holds {bad} NaN or infinite "
                                f"value{'s' * (bad > 1)} of {tensor.numel()} (a broken model: "
                                "its outputs would be NaN)")
    if problems:
        raise ModelFolderError(problems)


def read_checkpoint(path):
    """A checkpoint's contents, read with ``torch.load`` as tensors only.

    Arguments
    ---------
    path : str
        The ``.ckpt`` file.

    Returns
    -------
    object
        Usually a state dict.

    Raises
    ------
    ModelFolderError
        Naming ``path``: truncated, corrupt, holding pickled objects other
        than tensors (which could run code, so they are refused), or
        weights that are not finite (:func:`check_finite`).

    Example
    -------
    >>> path = getfixture("tmp_path") / "classifier.ckpt"
    >>> _ = path.write_bytes(b"PK\\3\\4 cut short")
    >>> read_checkpoint(str(path))
    Traceback (most recent call last):
    ...
    dmha_modules.folders.safety.ModelFolderError: .../classifier.ckpt: not a readable checkpoint (truncated or corrupt: ...)
    """
    import torch  # only where checkpoints are read

    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelFolderError([f"{path}: refused: it holds pickled objects other than "
                                "tensors, which could run code"]) from None
    except (RuntimeError, OSError, EOFError, ValueError) as failure:
        first_line = (str(failure).splitlines() or [type(failure).__name__])[0]
        raise ModelFolderError(
            [f"{path}: not a readable checkpoint (truncated or corrupt: {first_line})"]
        ) from None
    if isinstance(contents, dict):
        check_finite(contents, path)
    return contents


def checkpoint_problems(folder, error):
    """What made loading ``folder`` fail with ``error``, each line naming the folder's file.

    Every checkpoint is read as SpeechBrain reads it (:func:`read_checkpoint`),
    so the one that is truncated, corrupt or holds pickled code is named,
    rather than a temporary copy or nothing.

    Arguments
    ---------
    folder : str
        The model folder.
    error : Exception
        What loading it raised.

    Returns
    -------
    list of str

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> checkpoint_problems(str(folder), FileNotFoundError(2, "No such file", "/tmp/x/a.ckpt"))
    ['.../a.ckpt: no such file (hyperparams.yaml loads it)']
    """
    missing = getattr(error, "filename", None)
    if isinstance(error, FileNotFoundError) and missing:
        name = os.path.basename(missing)
        return [f"{os.path.join(folder, name)}: no such file (hyperparams.yaml loads it)"]
    problems = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".ckpt") and name != "label_encoder.ckpt":  # that one is text
            try:
                read_checkpoint(os.path.join(folder, name))
            except ModelFolderError as failure:
                problems += failure.problems
    return problems or [f"{folder}: cannot be loaded ({error})"]
