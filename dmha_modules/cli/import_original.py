"""``dmha import-original`` (also ``import-seed``): an original-code model -> a model folder.

The original is the research code of the Double Multi-Head Attention paper.

Every option is an argument of :func:`dmha_modules.original.import_original`.
"""

from dmha_modules.cli.inputs import check_outputs
from dmha_modules.cli.options import (
    add_command,
    comma_list,
    function_arguments,
    non_negative_float,
    option,
    positive_int,
)
from dmha_modules.original import import_original


def register(commands):
    """Adds ``import-original`` (alias ``import-seed``) to the ``dmha`` verbs."""
    parser = add_command(
        commands, "import-original", run, function=import_original, aliases=["import-seed"],
        help="model folder from a model of the original research code",
        description="Convert a checkpoint (.chkpt) and settings (.pkl) of the original "
        "Double Multi-Head Attention code into a model folder. Nothing pickled is run: "
        "only argparse.Namespace settings and tensors are accepted.",
    )
    option(parser, "checkpoint", required=True, help="the original's .chkpt file")
    option(parser, "config", required=True, help="the original's _config.pkl file")
    option(parser, "out", required=True, help="model folder to write")
    option(parser, "sample_rate", type=positive_int, help="sample rate the model was trained at")
    option(parser, "task", choices=("age", "speaker"),
           help="what the classes are; by default as the settings say (the age variant's "
           "have a criterion)")
    option(parser, "groups", type=comma_list(str),
           help="class names in class order, comma-separated, e.g. "
           "twenties,thirties,fourties,fifties,sixties,seventies; by default the age "
           "variant's names for 6 or 9 classes, else 0..C-1")
    option(parser, "group_ages", type=comma_list(non_negative_float),
           help="age models: years of each group, comma-separated; by default the "
           "middle of decade-named groups (twenties: 25)")


def run(args):
    """Converts the model; prints how closely the folder reproduces it."""
    check_outputs([("--out", args.out, "model")],
                  [("--checkpoint", args.checkpoint), ("--config", args.config)])
    folder, cosine = import_original(**function_arguments(args))
    print(f"{folder}: written; reloads strictly, cosine {cosine:.6f} to the converted model")
    return 0
