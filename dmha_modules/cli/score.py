"""``dmha score``: a trial list -> scores; EER and minDCF when it is labelled.

Trial lists are read by :func:`dmha_modules.trials.read_trials` (VoxCeleb,
Kaldi or unlabelled lines). With ``--cohort`` the scores are adaptive
s-norm'd. Trials of files that fail are reported and left out.
"""

import os
import sys

import numpy as np
import torch

from dmha_modules.atomic import write_atomic
from dmha_modules.cli.errors import InputError, batch_status, require_output
from dmha_modules.cli.inputs import check_writable, embed_paths, load_model
from dmha_modules.cli.options import (
    add_command,
    batching_options,
    model_options,
    option,
    out_option,
)
from dmha_modules.metrics import adaptive_snorm, cosine_scores, verification_metrics
from dmha_modules.trials import read_trials


def register(commands):
    """Adds ``score`` to the ``dmha`` verbs."""
    parser = add_command(
        commands, "score", run, help="score a trial list; EER and minDCF when labelled",
        description="Score trials. Lines: 'label enrol test' (VoxCeleb, label 1/0), "
        "'enrol test target|nontarget' (Kaldi) or 'enrol test' (unlabelled).",
    )
    model_options(parser)
    option(parser, "trials", required=True, help="trial list")
    option(parser, "data_root", default=".", help="folder the trial paths are relative to")
    out_option(parser, "scores file: 'enrol test score' lines")
    option(parser, "cohort", help="list of cohort audio files: adaptive s-norm")
    option(parser, "top_n", type=int, default=200,
           help="cohort scores per utterance for s-norm")
    option(parser, "p_target", type=float, default=0.01, help="target prior of minDCF")
    option(parser, "plot", help="PNG of the score distributions and DET curve")
    batching_options(parser)


def _trials(path, data_root):
    """``(enrol path, test path, label or None)`` per trial; every bad line in one ``InputError``.
    """
    trials, problems = read_trials(path)
    if problems:
        raise InputError(*(f"{path}: {message}" if line is None else f"{path}:{line}: {message}"
                           for line, message in problems))
    return [(os.path.join(data_root, enrol), os.path.join(data_root, test), label)
            for _, label, enrol, test in trials]


def _cohort(model, args):
    """Embeddings ``(C, E)`` of the good ``--cohort`` files."""
    with open(args.cohort, encoding="utf-8-sig") as listing:
        paths = [line.strip() for line in listing if line.strip()]
    cohort, failed = embed_paths(model, paths, args)
    cohort = np.delete(cohort, failed, axis=0)
    if len(cohort) < 2:
        raise InputError(f"{args.cohort}: fewer than 2 usable cohort files")
    return torch.from_numpy(cohort)


def _print_metrics(scores, labels, args):
    """EER and minDCF of labelled scores (and the ``--plot``)."""
    if labels.min() == labels.max():
        print("EER/minDCF need both target and non-target trials", file=sys.stderr)
        return
    metrics = verification_metrics(scores, labels, p_target=args.p_target)
    print(f"EER {100 * metrics['eer']:.2f}% (threshold {metrics['eer_threshold']:.4f}) "
          f"minDCF(p_target={args.p_target}) {metrics['min_dcf']:.4f}")
    if args.plot:
        from dmha_modules.plots import plot_verification_scores  # matplotlib: slow to import

        plot_verification_scores(scores, labels, args.plot, title=args.trials,
                                 p_target=args.p_target)


def run(args):
    """Scores the trials whose files embed; writes the scores, prints the metrics."""
    for out in filter(None, (args.out, args.plot)):
        check_writable(out, parent_must_exist=True)
    trials = _trials(args.trials, args.data_root)
    paths = sorted({path for enrol, test, _ in trials for path in (enrol, test)})
    index = {path: i for i, path in enumerate(paths)}
    with load_model(args.model, args.device, trust_model=args.trust_model) as model:
        embeddings, failed = embed_paths(model, paths, args)
        cohort = _cohort(model, args) if args.cohort else None
    bad = set(failed)
    kept = [t for t in trials if index[t[0]] not in bad and index[t[1]] not in bad]
    require_output(len(kept), args.out)
    pairs = torch.tensor([(index[e], index[t]) for e, t, _ in kept], dtype=torch.long)
    embeddings = torch.from_numpy(embeddings)
    if cohort is None:
        scores = cosine_scores(embeddings, pairs)
    else:
        scores = adaptive_snorm(embeddings, pairs, cohort, args.top_n)
    lines = [f"{os.path.relpath(e, args.data_root)} {os.path.relpath(t, args.data_root)} "
             f"{s:.6f}\n" for (e, t, _), s in zip(kept, scores.tolist())]
    write_atomic(args.out, lambda out: out.writelines(lines))
    status = batch_status(f"{len(kept)} trials scored into {args.out}",
                          len(trials) - len(kept), "skipped for failed files")
    if kept and kept[0][2] is not None:
        _print_metrics(scores, torch.tensor([label for *_, label in kept]), args)
    return status
