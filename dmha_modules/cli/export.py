"""``dmha export``: a training output folder -> a model folder; ``--onnx`` adds ``embedding.onnx``.

The model folder is written from the best checkpoint of a
``recipes/train.py`` output folder and checked to load strictly in
SpeechBrain and to reproduce the trained embedding. ``embedding.onnx`` takes
waveforms and lengths to embeddings, checked against PyTorch.
``--precision int8 --calibration_list LIST`` adds ``embedding_int8.onnx``
(and ``embedding.onnx`` first, if the folder has none): ONNX Runtime's static
quantisation, calibrated on the audio files of LIST
(:mod:`dmha_modules.folders.quantize`). ``--precision fp32`` writes what
``--onnx`` writes; bf16 needs no export (``dmha embed --precision bf16``).
"""

import os

from dmha_modules.cli.errors import InputError
from dmha_modules.cli.inputs import check_outputs, check_writable, listed_lines, load_model
from dmha_modules.cli.options import add_command, option, trust_model_option
from dmha_modules.folders.replace import ONNX_FILE
from dmha_modules.io.audio import AudioError, audio_info


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
    option(parser, "precision", choices=("fp32", "int8"),
           help="int8: also write embedding_int8.onnx, quantised with ONNX Runtime and "
           "calibrated on --calibration_list (and embedding.onnx if missing); fp32: as --onnx")
    option(parser, "calibration_list",
           help="with --precision int8: audio files to calibrate on, one path (or 'id path') "
           "per line, as dmha embed --list; a few hundred utterances of the model's use")
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


def _calibration_files(list_file):
    """The audio paths of ``--calibration_list``, each file's header checked before any work."""
    if not os.path.isfile(list_file):
        raise InputError(f"{list_file}: --calibration_list not found")
    entries = listed_lines(list_file)
    if not entries:
        raise InputError(f"{list_file}: --calibration_list names no audio file "
                         "(one path, or 'id path', per line)")
    for line, _, path in entries:
        try:
            audio_info(path)
        except AudioError as error:
            raise InputError(f"{list_file} line {line}: {error}") from None
    return entries


def _export_int8(folder, list_file, entries):
    """Writes ``embedding_int8.onnx`` of ``folder``'s ``embedding.onnx``, calibrated on ``entries``."""
    from dmha_modules.folders.onnx_export import OnnxEmbedder
    from dmha_modules.folders.quantize import INT8_FILE, describe, quantize_int8
    from dmha_modules.nn.embedding import load_utterance

    fp32_path = os.path.join(folder, ONNX_FILE)
    sample_rate = OnnxEmbedder(fp32_path).sample_rate
    waveforms = []
    for line, _, path in entries:
        try:
            waveforms.append(load_utterance(path, sample_rate).numpy())
        except AudioError as error:
            raise InputError(f"{list_file} line {line}: {error}") from None
    path = os.path.join(folder, INT8_FILE)
    record = quantize_int8(fp32_path, path, waveforms, list_file)
    cosine = record["cosine_to_fp32_on_calibration_files"]
    print(f"{path}: written, {describe(record)}; cosine to fp32 on those files: min "
          f"{cosine['min']:.4f}, mean {cosine['mean']:.4f}")


def _check_options(args):
    """Refuses contradictory options (exit 2) before any work."""
    if args.model and args.out:
        raise ValueError("--out is the model folder written from --experiment; with --model, "
                         f"{ONNX_FILE} goes into that model folder")
    if args.precision == "int8" and not args.calibration_list:
        raise ValueError("--precision int8 needs --calibration_list: the audio files "
                         "to calibrate the int8 ranges on")
    if args.calibration_list and args.precision != "int8":
        raise ValueError("--calibration_list is for --precision int8")
    if args.model and not (args.onnx or args.precision):
        raise InputError("--model only adds ONNX to a model folder: pass --onnx or "
                         "--precision int8")


def run(args):
    """Writes the model folder and, with ``--onnx`` / ``--precision``, its ONNX graphs."""
    _check_options(args)
    entries = None
    if args.precision == "int8":
        entries = _calibration_files(args.calibration_list)
        if args.model:
            from dmha_modules.folders.quantize import INT8_FILE

            check_writable(os.path.join(args.model, INT8_FILE))
    folder = _export_experiment(args) if args.experiment else args.model
    if args.onnx or args.precision == "fp32" or (
            args.precision == "int8" and not os.path.isfile(os.path.join(folder, ONNX_FILE))):
        _export_onnx(folder, args.trust_model)
    if args.precision == "int8":
        _export_int8(folder, args.calibration_list, entries)
    return 0
