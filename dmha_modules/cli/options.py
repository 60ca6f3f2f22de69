"""Declaring the ``dmha`` verbs and their options, each shared option once.

A verb is a sub-parser made by :func:`add_command`; its module's ``run(args)``
runs it. A verb that hands its options to one library function (``prepare``,
``features``, ``import-original``) names it with ``function=``: its options
then set that function's arguments of the same name, an option left out is
not passed, and the help shows the function's own default, so the Python API
and the command line cannot drift apart. The other verbs' defaults are
argparse's, shown with ``%(default)s``. Every option with ``_`` in its name
may also be spelt with ``-``.

Example
-------
>>> def greet(name, punctuation="!"):
...     'Greets someone.'
...     return f"hello {name}{punctuation}"
>>> parser = argparse.ArgumentParser()
>>> command = add_command(parser.add_subparsers(), "greet", run=None, help="", function=greet)
>>> option(command, "name", required=True, help="who")
>>> option(command, "punctuation", help="what ends it")
>>> args = parser.parse_args(["greet", "--name", "you"])
>>> function_arguments(args)
{'name': 'you'}
>>> help = command.format_help()
>>> "Greets someone." in help, "what ends it (default: !)" in help
(True, True)
"""

import argparse
import inspect
import math

import torch

# What add_command stores in the parsed options besides the function's arguments.
_DISPATCH = ("command", "source", "run", "function")


def add_command(commands, name, run, help, description=None, function=None, **kwargs):
    """Adds a verb: a sub-parser whose parsed options carry ``run`` (and ``function``).

    Arguments
    ---------
    commands : argparse._SubParsersAction
        Where the verb goes (``add_subparsers()`` of ``dmha`` or of a group).
    name : str
        The verb as typed.
    run : callable
        ``run(args)`` -> exit status.
    help : str
        One line for the list of verbs.
    description : str, optional
        The verb's ``--help`` text; by default ``function``'s docstring up to
        its arguments.
    function : callable, optional
        The library function the options are the arguments of.
    **kwargs
        More ``add_parser`` arguments (``aliases``).

    Returns
    -------
    argparse.ArgumentParser
    """
    if function is not None and description is None:
        description = inspect.getdoc(function).split("\nArguments\n")[0]
        kwargs["formatter_class"] = argparse.RawDescriptionHelpFormatter
    parser = commands.add_parser(name, help=help, description=description, **kwargs)
    parser.set_defaults(run=run, function=function)
    return parser


def _shown(default):
    """How a function's default reads in a help text (tuples as typed: ``a,b``)."""
    if isinstance(default, tuple):
        default = ",".join(str(item) for item in default)
    return str(default).replace("%", "%%")


def comma_list(cast):
    """An option type: "a,b,c" -> a tuple of ``cast`` values."""
    return lambda text: tuple(cast(item) for item in text.split(",") if item)


def number_type(cast, accepts, wanted):
    """An option type: ``cast(text)`` when it is finite and ``accepts`` it.

    Anything else (``nan``, ``inf``, out of range, not a number) is refused
    by argparse before any work: exit 2, ``argument --name: ...``.

    Arguments
    ---------
    cast : type
        ``float`` or ``int``.
    accepts : callable
        ``accepts(value)`` -> whether the value is in range.
    wanted : str
        What the option takes, for the error message.

    Returns
    -------
    callable

    Example
    -------
    >>> share = number_type(float, lambda value: 0 <= value < 1, "a share in [0, 1)")
    >>> share("0.25")
    0.25
    >>> share("nan")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 'nan' is not a share in [0, 1)
    """

    def convert(text):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not accepts(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value

    convert.__name__ = wanted  # what argparse names the type in its own messages
    return convert


finite_float = number_type(float, lambda value: True, "a finite number")
non_negative_float = number_type(float, lambda value: value >= 0, "a finite number >= 0")
positive_int = number_type(int, lambda value: value > 0, "a positive integer")
# Probabilities of an operating point or prior: 0 and 1 have no finite logit.
probability = number_type(float, lambda value: 0 < value < 1, "a probability in (0, 1)")
# Shares of speakers held out: all of them would leave none to train on.
share = number_type(float, lambda value: 0 <= value < 1, "a share in [0, 1)")


def option(parser, name, *flags, help, **kwargs):
    """Adds ``--name`` (also ``--name-with-hyphens``) to a verb's parser.

    In a verb with a ``function``, the option is passed only when given and
    its default is the function's argument ``name`` (none for an option such
    as ``--no_download`` that sets another argument through ``dest``).
    Otherwise ``default`` is argparse's. Either way the help shows it, unless
    it is None or False.

    Arguments
    ---------
    parser : argparse.ArgumentParser or argument group
        The verb's parser (or a group of it).
    name : str
        The option without dashes; also its ``dest`` unless given.
    *flags : str
        More spellings, such as ``-i``.
    help : str
        What the option is, without its default.
    **kwargs
        More ``add_argument`` arguments.
    """
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    kwargs.setdefault("dest", name)
    function = parser.get_default("function")
    if function is None:
        default, shown = kwargs.get("default"), "%(default)s"
    else:
        parameter = inspect.signature(function).parameters.get(name)
        default = inspect.Parameter.empty if parameter is None else parameter.default
        shown = _shown(default)
        kwargs["default"] = argparse.SUPPRESS
    if default not in (inspect.Parameter.empty, None, False):
        help = f"{help} (default: {shown})"
    parser.add_argument(*flags, *spellings, help=help, **kwargs)


def function_arguments(args):
    """The parsed options of a verb with a ``function``, as its keyword arguments.

    Arguments
    ---------
    args : argparse.Namespace
        Parsed by :func:`dmha_modules.cli.build_parser`.

    Returns
    -------
    dict
    """
    return {name: value for name, value in vars(args).items() if name not in _DISPATCH}


def trust_model_option(parser):
    """``--trust_model``: load a model folder whose YAML the safety check refuses."""
    option(parser, "trust_model", action="store_true",
           help="load the model folder even if its hyperparams.yaml names code that a dmha "
           "folder never runs (it is checked otherwise): only for folders you trust")


def model_options(parser):
    """``--model`` (a model folder), ``--trust_model`` and ``--device``."""
    option(parser, "model", required=True, help="model folder (hyperparams.yaml, *.ckpt)")
    trust_model_option(parser)
    option(
        parser,
        "device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device; cuda when available",
    )


def audio_input_options(parser):
    """Audio files as arguments, ``--list`` or ``--folder``; and the batching options."""
    parser.add_argument("inputs", nargs="*", help="audio files")
    option(
        parser,
        "list",
        dest="list_file",
        help="file with one audio path per line, or 'id path' (Kaldi wav.scp style)",
    )
    option(parser, "folder", help="every audio file under this folder")
    batching_options(parser)


def batching_options(parser):
    """``--batch_seconds`` and ``--no_progress`` of the verbs that embed files in bulk."""
    option(
        parser,
        "batch_seconds",
        type=non_negative_float,
        default=120.0,
        help="most padded audio per batch, in seconds; files are batched by length "
        "(0: one file at a time)",
    )
    option(parser, "no_progress", action="store_true", help="no progress bar")


def precision_option(parser):
    """``--precision {fp32,bf16,int8}`` of the verbs that embed with a model folder."""
    from dmha_modules.nn.precision import PRECISIONS

    option(parser, "precision", choices=PRECISIONS, default="fp32",
           help="fp32: PyTorch as trained; bf16: PyTorch under bf16 autocast (fp32, saying "
           "so, on a CPU without native bf16); int8: <model>/embedding_int8.onnx in ONNX "
           "Runtime (dmha export --precision int8)")


def out_option(parser, help):
    """The required ``--out`` of a verb that writes one output."""
    option(parser, "out", required=True, help=help)
