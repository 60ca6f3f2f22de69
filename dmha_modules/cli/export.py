"""``dmha export``: a training output folder -> a model folder; ``--onnx`` adds ``embedding.onnx``.

The model folder is written from the best checkpoint of a
``recipes/train.py`` output folder and checked to load strictly in
SpeechBrain and to reproduce the trained embedding. ``embedding.onnx`` takes
waveforms and lengths to embeddings, checked against PyTorch.
"""

import os

from dmha_modules.cli.errors import InputError
from dmha_modules.cli.inputs import check_outputs, check_writable, load_model
from dmha_modules.cli.options import add_command, option, trust_model_option
from dmha_modules.folders.replace import ONNX_FILE


def register(commands):
    """Adds ``export`` to the ``dmha`` verbs."""
    parser = add_command(
        commands, "export", run, help="write a model folder from a training output folder; ONNX",
        description="Write <experiment>/model (or --out) from the best checkpoint of a "
        "recipes/train.py output folder, checked to load strictly in SpeechBrain and to "
        "reproduce the trained embedding; with --onnx also embedding.onnx. "
        "Or, with --model, add embedding.onnx to an existing model folder.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    option(source, "experiment", help="recipes/train.py output folder")
    option(source, "model", help="existing model folder (with --onnx)")
    option(parser, "out", help="model folder to write; by default <experiment>/model")
    option(parser, "onnx", action="store_true",
           help="also write embedding.onnx: waveforms and lengths -> embeddings")
    trust_model_option(parser)


def _export_experiment(args):
    """The model folder of a training output folder; the folder's problems are input errors."""
    from dmha_modules.folders.model_folder import export_experiment  # builds the recipe's model

    default = os.path.join(args.experiment, "model")
    # The training folder is read whole (its YAML, checkpoints, manifests); its model is ours.
    check_outputs([("--out", args.out or default, "model")],
                  read_folders=[("--experiment", args.experiment)], own=[default])
    try:
        folder, cosine = export_experiment(args.experiment, args.out, args.trust_model)
    except ValueError as error:  # a model without a classifier, a refused YAML
        raise InputError(str(error)) from None
    print(f"{folder}: written; reloads strictly, cosine {cosine:.6f} to the trained model")
    return folder


def _export_onnx(folder, trust_model):
    from dmha_modules.folders.onnx_export import export_onnx  # the ONNX packages: an optional extra
    from dmha_modules.nn.waveform import waveform_model

    path = os.path.join(folder, ONNX_FILE)
    check_writable(path)
    with load_model(folder, "cpu", trust_model=trust_model) as model:
        inner = waveform_model(model.mods)  # the feature, norm and embedding modules
        export_onnx(inner.compute_features, inner.mean_var_norm, inner.embedding_model, path)
    print(f"{path}: written and checked against PyTorch")


def run(args):
    """Writes the model folder and, with ``--onnx``, its ONNX graph."""
    if args.model and args.out:
        raise ValueError("--out is the model folder written from --experiment; with --model, "
                         f"{ONNX_FILE} goes into that model folder")
    if args.experiment:
        folder = _export_experiment(args)
    elif not args.onnx:
        raise InputError("--model only adds ONNX to a model folder: pass --onnx")
    else:
        folder = args.model
    if args.onnx:
        _export_onnx(folder, args.trust_model)
    return 0
