"""``dmha calibrate``: a labelled development trial list -> the model folder's ``calibration.json``.

The model's cosine scores of the trials (by default of embeddings centred on
the mean embedding of the list's files, and standardised by the mean and
standard deviation of the cosines between all pairs of them, see
:mod:`dmha_modules.scoring.list_norm`) are mapped to log-likelihood ratios
by linear logistic regression (:func:`dmha_modules.scoring.calibration.fit_calibration`,
optionally with the trials' durations as quality measures), and the decision
threshold is set for the operating point named: a target false-accept rate
(read from the development non-targets' LLRs) or the Bayes threshold of a
target prior. ``dmha verify`` and ``dmha score`` then give LLRs and decide
at that threshold. The development figures (EER, minDCF, Cllr before and
after, minCllr, the rates at the threshold) are printed and stored in the
JSON; the DET curve with the operating point goes to ``--plot``.
"""

import os

import numpy as np

from dmha_modules.scoring.calibration import (
    QUALITY_TERMS,
    SCORE_CALIBRATION_FILE,
    embedding_model_sha256,
    fit_calibration,
    save_calibration,
)
from dmha_modules.scoring.cllr import cllr, min_cllr
from dmha_modules.cli.errors import InputError, batch_status
from dmha_modules.cli.inputs import check_outputs, load_model, trial_inputs, trial_seconds
from dmha_modules.cli.options import (
    add_command,
    batching_options,
    model_options,
    option,
    positive_int,
    probability,
)
from dmha_modules.cli.score import embed_trials, print_metrics, read_trial_paths
from dmha_modules.scoring.list_norm import pairwise_cosine_stats
from dmha_modules.scoring.metrics import cosine_scores, rates_at_threshold, verification_metrics
from dmha_modules.folders.replace import CALIBRATION_PLOT_FILE
from dmha_modules.scoring.trials import read_trials

CENTRINGS = ("mean", "none")
STANDARDISINGS = ("list", "none")
# Fewest distinct target and non-target trials per weight of the map: the ten events per
# variable of logistic regression (Peduzzi et al. 1996); fewer let a handful of trials fix
# a map that calls two strangers the same speaker.
TRIALS_PER_WEIGHT = 10


def register(commands):
    """Adds ``calibrate`` to the ``dmha`` verbs."""
    parser = add_command(
        commands, "calibrate", run, help="calibrate scores to LLRs on a development trial list",
        description="Fit a linear logistic-regression map from the model's cosine scores "
        "to log-likelihood ratios on a labelled development trial list (speakers the model "
        "was not trained on), choose the decision threshold of an operating point, and "
        f"store both in the model folder as {SCORE_CALIBRATION_FILE}.",
    )
    model_options(parser)
    option(parser, "trials", required=True,
           help="labelled development trial list ('label enrol test' or 'enrol test "
           "target|nontarget')")
    option(parser, "data_root", default=".", help="folder the trial paths are relative to")
    point = parser.add_mutually_exclusive_group(required=True)
    option(point, "target_far", type=probability,
           help="operating point: the false-accept rate wanted, e.g. 0.01; the threshold "
           "is read from the development non-target trials")
    option(point, "p_target", type=probability,
           help="operating point: the Bayes threshold -logit(p_target) of this target prior")
    option(parser, "quality", choices=sorted(QUALITY_TERMS),
           help="quality measure added to the map: duration (log of the shorter and of the "
           "longer side's seconds)")
    option(parser, "centring", choices=CENTRINGS, default="mean",
           help="mean: score embeddings centred on the mean of the list's files (each list "
           "dmha score reads is centred on its own, so another corpus's impostor scores land "
           "nearer the development ones); "
           "none: plain cosines, as calibrations before centring")
    option(parser, "standardising", choices=STANDARDISINGS, default="list",
           help="list: standardise the cosines by the mean and standard deviation of the "
           "cosines between all pairs of the list's files (each list dmha score reads by its "
           "own: in a list of many speakers nearly all pairs are impostors, so another "
           "corpus's impostor scores land on the development ones); none: as they are, as "
           "calibrations before standardising")
    option(parser, "prior", type=probability, default=0.5,
           help="effective target prior of the logistic-regression objective")
    option(parser, "min_trials", type=positive_int,
           help=f"fewest distinct target and fewest distinct non-target trials to fit on "
           f"(default {TRIALS_PER_WEIGHT} per weight of the map: {TRIALS_PER_WEIGHT} for the "
           f"score alone, {3 * TRIALS_PER_WEIGHT} with --quality duration)")
    option(parser, "plot", help=f"PNG of the DET curve with the operating point (default: "
           f"{CALIBRATION_PLOT_FILE} in the model folder)")
    batching_options(parser)


def _minimum_trials(args):
    """The fewest distinct target and non-target trials: ``--min_trials`` or 10 per weight."""
    if args.min_trials is None:
        weights = 1 + sum(len(QUALITY_TERMS[name]) for name in [args.quality] if name)
        return TRIALS_PER_WEIGHT * weights
    return args.min_trials


def _check_counts(labels, minimum, args, what):
    """Refuses fewer than ``minimum`` target or non-target ``labels`` (0/1) of ``what``."""
    n_target, n_nontarget = int(sum(labels)), len(labels) - int(sum(labels))
    if min(n_target, n_nontarget) < minimum:
        raise InputError(
            f"{args.trials}: {n_target} target and {n_nontarget} non-target {what}; "
            f"calibration needs at least {minimum} of each ({TRIALS_PER_WEIGHT} per weight of "
            "the map; --min_trials sets another minimum)")


def _distinct_trials(trials, args):
    """The trials, each pair once; self-pairs and contradictions refused with their lines.

    A cosine is symmetric, so ``a b`` and ``b a`` are the same trial.
    """
    numbers = [number for number, *_ in read_trials(args.trials)[0]]
    seen, distinct, problems = {}, [], []
    for number, (enrol, test, label) in zip(numbers, trials):
        pair = tuple(sorted(os.path.normpath(path) for path in (enrol, test)))
        if pair[0] == pair[1]:
            problems.append(f"{args.trials}:{number}: {enrol} is paired with itself; a "
                            "calibration needs trials of two different files")
        elif pair not in seen:
            seen[pair] = (number, label)
            distinct.append((enrol, test, label))
        elif seen[pair][1] != label:
            problems.append(f"{args.trials}:{number}: contradicts line {seen[pair][0]}: "
                            f"{enrol} and {test} labelled {label} here, {seen[pair][1]} there")
    if problems:
        raise InputError(*problems)
    if len(distinct) < len(trials):
        print(f"{args.trials}: {len(trials) - len(distinct)} repeated trials (the same pair, "
              "either way round) counted once")
    return distinct


def _labelled_trials(args):
    """The distinct development trials, refused unless labelled with enough of both kinds."""
    minimum = _minimum_trials(args)
    trials = read_trial_paths(args.trials, args.data_root)
    if trials[0][2] is None:
        raise InputError(f"{args.trials}: calibration needs a labelled trial list "
                         "('label enrol test' or 'enrol test target|nontarget')")
    trials = _distinct_trials(trials, args)
    _check_counts([label for *_, label in trials], minimum, args, "trials")
    return trials, minimum


def _calibrated(scores, labels, seconds, centre, stats, args):
    """The fitted calibration (of cosines around ``centre``, or plain when None, standardised
    by ``stats`` unless None) with its threshold and development figures."""
    quality = [args.quality] if args.quality else []
    calibration = fit_calibration(scores, labels, quality, seconds, prior=args.prior)
    calibration.centre = None if centre is None else centre.tolist()
    calibration.score_stats = stats
    llrs = calibration.llrs(scores, seconds)
    try:
        calibration = calibration.with_operating_point(
            llrs[labels == 0], target_far=args.target_far, p_target=args.p_target)
    except ValueError as error:  # too few non-target trials for the rate
        raise InputError(f"{args.trials}: {error}") from None
    p_miss, p_fa = rates_at_threshold(llrs, labels, calibration.threshold)
    metrics = verification_metrics(llrs, labels, p_target=args.p_target or 0.01)
    calibration.development = {
        "trials": os.path.abspath(args.trials), "n_target": int(labels.sum()),
        "n_nontarget": int((labels == 0).sum()), "eer": metrics["eer"],
        "min_dcf": metrics["min_dcf"], "min_dcf_p_target": args.p_target or 0.01,
        "cllr_of_cosine": cllr(scores, labels), "cllr": cllr(llrs, labels),
        "min_cllr": min_cllr(scores, labels), "false_accept_rate": p_fa, "miss_rate": p_miss,
    }
    return calibration, llrs


def run(args):
    """Fits and stores the calibration; prints the development figures."""
    out = os.path.join(args.model, SCORE_CALIBRATION_FILE)
    default_plot = os.path.join(args.model, CALIBRATION_PLOT_FILE)
    plot = args.plot or default_plot
    trials, minimum = _labelled_trials(args)
    check_outputs([(SCORE_CALIBRATION_FILE, out, "file"), ("--plot", plot, "file")],
                  trial_inputs(args.trials, trials), [("--model", args.model)],
                  own=(out, default_plot))
    with load_model(args.model, args.device, trust_model=args.trust_model) as model:
        kept, embeddings, pairs = embed_trials(model, trials, args)
    labels = np.array([label for *_, label in kept])
    _check_counts(labels.tolist(), minimum, args, "trials left of files that could be read")
    centre = embeddings.nanmean(dim=0) if args.centring == "mean" else None  # NaN: failed files
    if centre is not None:
        embeddings = embeddings - centre
    scores = cosine_scores(embeddings, pairs).numpy().astype(np.float64)
    stats = None
    if args.standardising == "list":
        try:
            stats = pairwise_cosine_stats(embeddings)
        except ValueError as error:
            raise InputError(f"{args.trials}: {error}") from None
        scores = (scores - stats[0]) / stats[1]
    seconds = trial_seconds(kept) if args.quality else None
    calibration, llrs = _calibrated(scores, labels, seconds, centre, stats, args)
    calibration.embedding_model_sha256 = embedding_model_sha256(args.model)
    save_calibration(calibration, args.model)
    from dmha_modules.io.plots import plot_verification_scores  # matplotlib: slow to import

    plot_verification_scores(llrs, labels, plot, title=f"calibrated LLRs of {args.trials}",
                             p_target=args.p_target or 0.01,
                             operating_point=(calibration.threshold, calibration.point_name()))
    development = calibration.development
    print(f"{out}: {calibration.describe()}")
    print(f"development: {development['n_target']} target and {development['n_nontarget']} "
          f"non-target trials; Cllr of the cosine scores {development['cllr_of_cosine']:.4f}")
    print_metrics(llrs, labels, args.p_target or 0.01, calibration)
    return batch_status(f"DET curve: {plot}", len(trials) - len(kept),
                        "trials skipped for failed files")
