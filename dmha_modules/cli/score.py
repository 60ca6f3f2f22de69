"""``dmha score``: a trial list -> scores; EER, minDCF, Cllr and minCllr when it is labelled.

Trial lists are read by :func:`dmha_modules.scoring.trials.read_trials` (VoxCeleb,
Kaldi or unlabelled lines). With ``--cohort`` the scores are adaptive
s-norm'd. Trials of files that fail are reported and left out. A model
folder with ``calibration.json`` (``dmha calibrate``) gives LLRs and a
decision per trial at its stored threshold (a calibration of centred or
standardised cosines centres and standardises the list on its own files'
statistics, see :mod:`dmha_modules.scoring.list_norm`); one without gives cosine
scores, as before calibration existed, and says so.
"""

import os
import sys

import numpy as np
import torch

from dmha_modules.io.atomic import write_atomic
from dmha_modules.scoring.cllr import cllr, min_cllr
from dmha_modules.cli.errors import InputError, batch_status, require_output
from dmha_modules.cli.inputs import (
    NOT_CALIBRATED,
    calibrated_cosines,
    check_outputs,
    embed_paths,
    load_model,
    read_calibration,
    trial_inputs,
    trial_seconds,
)
from dmha_modules.cli.options import (
    add_command,
    batching_options,
    model_options,
    precision_option,
    option,
    out_option,
    positive_int,
    probability,
)
from dmha_modules.scoring.metrics import (
    adaptive_snorm,
    cosine_scores,
    rates_at_threshold,
    verification_metrics,
)
from dmha_modules.scoring.trials import read_trials


def register(commands):
    """Adds ``score`` to the ``dmha`` verbs."""
    parser = add_command(
        commands, "score", run, help="score a trial list; EER and minDCF when labelled",
        description="Score trials. Lines: 'label enrol test' (VoxCeleb, label 1/0), "
        "'enrol test target|nontarget' (Kaldi) or 'enrol test' (unlabelled). With the "
        "model folder's calibration.json (dmha calibrate) the scores are LLRs, each with "
        "its decision at the stored threshold.",
    )
    model_options(parser)
    precision_option(parser)
    option(parser, "trials", required=True, help="trial list")
    option(parser, "data_root", default=".", help="folder the trial paths are relative to")
    out_option(parser, "scores file: 'enrol test score' lines, or 'enrol test llr "
               "accept|reject' with a calibrated model")
    option(parser, "cohort", help="list of cohort audio files: adaptive s-norm (then "
           "without calibration, which maps plain cosine scores)")
    option(parser, "top_n", type=positive_int, default=200,
           help="cohort scores per utterance for s-norm")
    option(parser, "p_target", type=probability, default=0.01, help="target prior of minDCF")
    option(parser, "plot", help="PNG of the score distributions and DET curve")
    batching_options(parser)


def read_trial_paths(path, data_root):
    """``(enrol path, test path, label or None)`` per trial; every bad line in one ``InputError``.
    """
    trials, problems = read_trials(path)
    if problems:
        raise InputError(*(f"{path}: {message}" if line is None else f"{path}:{line}: {message}"
                           for line, message in problems))
    return [(os.path.join(data_root, enrol), os.path.join(data_root, test), label)
            for _, label, enrol, test in trials]


def embed_trials(model, trials, args):
    """Embeds the trials' files; the trials whose files all embed.

    Returns
    -------
    kept : list of tuple
        The trials kept, as given.
    embeddings : torch.Tensor
        ``(files, E)``.
    pairs : torch.Tensor
        ``(len(kept), 2)`` rows of ``embeddings`` of each kept trial.
    """
    paths = sorted({path for enrol, test, _ in trials for path in (enrol, test)})
    index = {path: i for i, path in enumerate(paths)}
    embeddings, failed = embed_paths(model, paths, args)
    bad = set(failed)
    kept = [t for t in trials if index[t[0]] not in bad and index[t[1]] not in bad]
    pairs = torch.tensor([(index[e], index[t]) for e, t, _ in kept], dtype=torch.long)
    return kept, torch.from_numpy(embeddings), pairs.reshape(-1, 2)


def _cohort_paths(cohort):
    """The audio files of a ``--cohort`` list, one per line; [] without one."""
    if cohort is None:
        return []
    with open(cohort, encoding="utf-8-sig") as listing:
        return [line.strip() for line in listing if line.strip()]


def _cohort(model, paths, args):
    """Embeddings ``(C, E)`` of the good ``--cohort`` files ``paths``."""
    cohort, failed = embed_paths(model, paths, args)
    cohort = np.delete(cohort, failed, axis=0)
    if len(cohort) < 2:
        raise InputError(f"{args.cohort}: fewer than 2 usable cohort files")
    return torch.from_numpy(cohort)


def print_metrics(scores, labels, p_target, calibration=None):
    """EER, minDCF, Cllr and minCllr of labelled scores; the rates at a calibration's threshold.

    Arguments
    ---------
    scores : numpy.ndarray
        ``(N,)`` cosine scores, or LLRs with ``calibration``.
    labels : numpy.ndarray
        ``(N,)`` 1 for target trials, 0 else; both occur.
    p_target : float
        The target prior of minDCF (and of the actual DCF at the threshold).
    calibration : Calibration, optional
        Whose threshold the scores (LLRs) are decided at.
    """
    metrics = verification_metrics(scores, labels, p_target=p_target)
    print(f"EER {100 * metrics['eer']:.2f}% (threshold {metrics['eer_threshold']:.4f}) "
          f"minDCF(p_target={p_target}) {metrics['min_dcf']:.4f} "
          f"Cllr {cllr(scores, labels):.4f} minCllr {min_cllr(scores, labels):.4f}")
    if calibration is not None:
        p_miss, p_fa = rates_at_threshold(scores, labels, calibration.threshold)
        dcf = (p_target * p_miss + (1 - p_target) * p_fa) / min(p_target, 1 - p_target)
        print(f"at the threshold {calibration.threshold:.4f} ({calibration.point_name()}): "
              f"false accepts {100 * p_fa:.2f}%, misses {100 * p_miss:.2f}%, "
              f"actual DCF(p_target={p_target}) {dcf:.4f}")


def _lines(kept, scores, data_root, calibration):
    """The scores file's lines: ``enrol test score`` (and ``accept|reject`` when calibrated)."""
    lines = []
    for (enrol, test, _), score in zip(kept, scores.tolist()):
        line = f"{os.path.relpath(enrol, data_root)} {os.path.relpath(test, data_root)} {score:.6f}"
        if calibration is not None:
            line += " accept" if score > calibration.threshold else " reject"
        lines.append(line + "\n")
    return lines


def _calibration(args):
    """The model folder's calibration if it applies to these scores; says which scores they are."""
    calibration = read_calibration(args.model)
    if calibration is None:
        print(NOT_CALIBRATED)
    elif args.cohort:
        print("calibration.json not applied: it maps plain cosine scores, these are s-normed")
        return None
    else:
        print(f"LLRs of calibration.json: {calibration.describe()}")
    return calibration


def run(args):
    """Scores the trials whose files embed; writes the scores, prints the metrics."""
    trials = read_trial_paths(args.trials, args.data_root)
    cohort_paths = _cohort_paths(args.cohort)
    check_outputs([("--out", args.out, "file"), ("--plot", args.plot, "file")],
                  [*trial_inputs(args.trials, trials), ("--cohort", args.cohort),
                   *(("audio file of --cohort", path) for path in cohort_paths)],
                  [("--model", args.model)])
    calibration = _calibration(args)
    with load_model(args.model, args.device, trust_model=args.trust_model,
                    precision=args.precision) as model:
        kept, embeddings, pairs = embed_trials(model, trials, args)
        cohort = _cohort(model, cohort_paths, args) if args.cohort else None
    require_output(len(kept), args.out)
    if cohort is None and calibration is not None:
        scores, steps = calibrated_cosines(calibration, embeddings, pairs, args.model)
        print("\n".join(steps), end="\n" if steps else "")
    elif cohort is None:
        scores = cosine_scores(embeddings, pairs).numpy().astype(np.float64)
    else:
        scores = adaptive_snorm(embeddings, pairs, cohort, args.top_n).numpy().astype(np.float64)
    if calibration is not None:
        scores = calibration.llrs(scores, trial_seconds(kept) if calibration.quality else None)
    lines = _lines(kept, scores, args.data_root, calibration)
    write_atomic(args.out, lambda out: out.writelines(lines))
    status = batch_status(f"{len(kept)} trials scored into {args.out}",
                          len(trials) - len(kept), "skipped for failed files")
    labels = np.array([label for *_, label in kept])
    if kept[0][2] is None:
        return status
    if labels.min() == labels.max():
        print("EER/minDCF need both target and non-target trials", file=sys.stderr)
        return status
    print_metrics(scores, labels, args.p_target, calibration)
    if args.plot:
        from dmha_modules.io.plots import plot_verification_scores  # matplotlib: slow to import

        point = None if calibration is None else (calibration.threshold,
                                                  calibration.point_name())
        plot_verification_scores(scores, labels, args.plot, title=args.trials,
                                 p_target=args.p_target, operating_point=point)
    return status
