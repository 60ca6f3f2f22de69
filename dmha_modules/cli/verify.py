"""``dmha verify``: two audio files -> score and same-speaker decision.

With the model folder's ``calibration.json`` (``dmha calibrate``) the score
is an LLR, decided at the stored threshold of the operating point chosen
there (of embeddings centred on the development list's mean and standardised
by its cosine statistics, when it was calibrated so: two files are too few to
take statistics of). Without it (folders
written before calibration existed, age models, imported ones) it is the
cosine, decided at ``--threshold`` or the model's own (its EER threshold on
its test speakers), and the output says so.
"""

import torch

from dmha_modules.cli.errors import InputError
from dmha_modules.cli.inputs import (
    NOT_CALIBRATED,
    calibrated_cosines,
    load_model,
    read_calibration,
    trial_seconds,
)
from dmha_modules.cli.options import (
    add_command,
    finite_float,
    model_options,
    option,
    precision_option,
)

DECISIONS = {True: "same speaker", False: "different speakers"}


def register(commands):
    """Adds ``verify`` to the ``dmha`` verbs."""
    parser = add_command(
        commands, "verify", run, help="are two audio files the same speaker?",
        description="Score two files and decide. With the model folder's calibration.json "
        "(dmha calibrate): the LLR, decided at the stored threshold; else the cosine of the "
        "embeddings, decided at the model's EER threshold on its test speakers.",
    )
    model_options(parser)
    precision_option(parser)
    parser.add_argument("enrol", help="first audio file")
    parser.add_argument("test", help="second audio file")
    option(parser, "threshold", type=finite_float,
           help="decide here instead: an LLR with a calibrated model, else a cosine")


def _uncalibrated_threshold(model, args):
    """``--threshold`` or the model's EER threshold; an ``InputError`` when there is none."""
    threshold = args.threshold
    if threshold is None:
        threshold = getattr(model.hparams, "verification_threshold", None)
    if threshold is None:
        raise InputError(f"{args.model} has no verification threshold (an age model, "
                         "or imported); pass --threshold")
    return threshold


def run(args):
    """Prints the score, the threshold and the decision."""
    calibration = read_calibration(args.model)
    with load_model(args.model, args.device, trust_model=args.trust_model,
                    precision=args.precision) as model:
        if calibration is None:
            threshold = _uncalibrated_threshold(model, args)
        enrol, test = model.embed_file(args.enrol), model.embed_file(args.test)
    if calibration is None:
        score = float(torch.nn.functional.cosine_similarity(enrol, test, dim=0))
        print(f"score {score:.4f} threshold {threshold:.4f}: {DECISIONS[score > threshold]}")
        print(NOT_CALIBRATED + ("; the threshold is the model's EER threshold on its test "
                                "speakers" if args.threshold is None else "; the threshold is "
                                "--threshold"))
        return 0
    scores, _ = calibrated_cosines(calibration, torch.stack([enrol, test]),
                                   torch.tensor([[0, 1]]), args.model)
    score = float(scores[0])
    seconds = trial_seconds([(args.enrol, args.test)]) if calibration.quality else None
    llr = float(calibration.llrs([score], seconds)[0])
    threshold = calibration.threshold if args.threshold is None else args.threshold
    point = calibration.point_name() if args.threshold is None else "--threshold"
    print(f"llr {llr:.4f} threshold {threshold:.4f} ({point}): {DECISIONS[llr > threshold]}")
    basis = (" (by the development list's statistics)" if calibration.score_stats is not None
             else " (around the development list's mean)" if calibration.centre is not None
             else "")
    print(f"{calibration.score_name()} {score:.4f}{basis}; calibration.json: "
          f"{calibration.describe()}")
    return 0
