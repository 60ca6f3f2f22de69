"""``dmha embed``: audio files -> embeddings (``.npz``, ``.npy`` + ids, Kaldi ``.ark`` + ``.scp``).

Audio of any sample rate and channel count is accepted (resampled, averaged
to mono); bad files are reported and skipped. ``--onnx`` runs the model
folder's ``embedding.onnx`` (``dmha export --onnx``) with ONNX Runtime: fp32,
as ``--precision fp32`` does in PyTorch. ``--precision int8`` runs
``embedding_int8.onnx`` with ONNX Runtime (``--onnx`` adds nothing to it);
``--precision bf16`` is PyTorch's, so it cannot go with ``--onnx``.
"""

import os

from dmha_modules.cli.errors import InputError, batch_status, require_output
from dmha_modules.cli.inputs import (
    check_audio_outputs,
    embed_paths,
    load_model,
    read_audio_inputs,
)
from dmha_modules.cli.options import (
    add_command,
    audio_input_options,
    model_options,
    precision_option,
    option,
    out_option,
)
from dmha_modules.io.embeddings import check_output, write_embeddings, written_files


def register(commands):
    """Adds ``embed`` to the ``dmha`` verbs."""
    parser = add_command(
        commands, "embed", run, help="embed audio files with a model folder",
        description="Embed audio files. Ids are paths without extension (relative to "
        "--folder), or the first column of a two-column --list.",
    )
    model_options(parser)
    precision_option(parser)
    audio_input_options(parser)
    out_option(parser, "embeddings file: .npz (one array per id), .npy (+ .txt of ids) or "
               "Kaldi .ark (+ .scp)")
    option(parser, "onnx", action="store_true",
           help="run <model>/embedding.onnx (fp32) with ONNX Runtime (see dmha export --onnx); "
           "--precision int8 runs <model>/embedding_int8.onnx with ONNX Runtime")


def _onnx_session(folder):
    """The ONNX Runtime session of ``<folder>/embedding.onnx``."""
    from dmha_modules.folders.onnx_export import OnnxEmbedder  # ONNX Runtime: an optional extra

    path = os.path.join(folder, "embedding.onnx")
    if not os.path.exists(path):
        raise InputError(f"{path}: not found; write it with dmha export --model {folder} --onnx")
    return OnnxEmbedder(path)


def run(args):
    """Embeds the audio and writes the embeddings of the good files."""
    if args.onnx and args.precision == "bf16":
        raise ValueError("--onnx runs embedding.onnx in fp32 with ONNX Runtime; --precision "
                         "bf16 runs PyTorch: give one of them")
    ids, paths = read_audio_inputs(args)
    out, *companions = written_files(args.out)  # .npy and .ark write a second file
    check_audio_outputs(args, paths, [("--out", out, "file")] + [
        (f"the {os.path.splitext(path)[1]} file of --out", path, "file") for path in companions])
    try:
        check_output(args.out, ids)  # before the work, not after it
    except ValueError as error:
        raise InputError(str(error)) from None
    onnx = args.onnx and args.precision == "fp32"
    with load_model(args.model, args.device, trust_model=args.trust_model,
                    precision=args.precision) as model:
        session = _onnx_session(args.model) if onnx else None
        embeddings, failed = embed_paths(model, paths, args, session)
    keep = [i for i in range(len(paths)) if i not in failed]
    require_output(len(keep), args.out)
    written = write_embeddings(args.out, [ids[i] for i in keep], embeddings[keep])
    return batch_status(f"{len(keep)} embeddings written to {', '.join(written)}", len(failed))
