"""``dmha verify``: two audio files -> cosine score and same-speaker decision.

The threshold is ``--threshold`` or the model's own (its EER threshold on
its test speakers).
"""

import torch

from dmha_modules.cli.errors import InputError
from dmha_modules.cli.inputs import load_model
from dmha_modules.cli.options import add_command, model_options, option


def register(commands):
    """Adds ``verify`` to the ``dmha`` verbs."""
    parser = add_command(
        commands, "verify", run, help="are two audio files the same speaker?",
        description="Cosine score of two files' embeddings and the decision at the "
        "threshold (by default the model's EER threshold on its test speakers).",
    )
    model_options(parser)
    parser.add_argument("enrol", help="first audio file")
    parser.add_argument("test", help="second audio file")
    option(parser, "threshold", type=float, help="cosine above which it is a match")


def run(args):
    """Prints the score, the threshold and the decision."""
    with load_model(args.model, args.device, trust_model=args.trust_model) as model:
        threshold = args.threshold
        if threshold is None:
            threshold = getattr(model.hparams, "verification_threshold", None)
        if threshold is None:
            raise InputError(f"{args.model} has no verification threshold (an age model, "
                             "or imported); pass --threshold")
        enrol, test = model.embed_file(args.enrol), model.embed_file(args.test)
    score = float(torch.nn.functional.cosine_similarity(enrol, test, dim=0))
    decision = "same speaker" if score > threshold else "different speakers"
    print(f"score {score:.4f} threshold {threshold:.4f}: {decision}")
    return 0
