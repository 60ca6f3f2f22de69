"""``dmha import-original`` (also ``import-seed``): an original-code model -> a model folder.

The original is the research code of the Double Multi-Head Attention paper.

Every option is an argument of :func:`dmha_modules.original.import_original`.
"""

from dmha_modules.cli.options import add_command, function_arguments, option
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
    option(parser, "sample_rate", type=int, help="sample rate the model was trained at")


def run(args):
    """Converts the model; prints how closely the folder reproduces it."""
    folder, cosine = import_original(**function_arguments(args))
    print(f"{folder}: written; reloads strictly, cosine {cosine:.6f} to the converted model")
    return 0
