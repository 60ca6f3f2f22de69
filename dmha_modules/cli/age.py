"""``dmha age``: audio files -> age group, group probabilities and years (CSV).

Columns: ``id, path, age_group, age_years`` and ``p_<group>`` per group
(``age_years`` empty for models trained without ages in years, ``age_group``
empty where an imported ordinal model's rule reaches no group);
bad files are reported and left out.
"""

import csv

from dmha_modules.atomic import write_atomic
from dmha_modules.cli.errors import InputError, batch_status, report_skipped, require_output
from dmha_modules.cli.inputs import check_writable, load_model, read_audio_inputs
from dmha_modules.cli.options import add_command, audio_input_options, model_options, out_option
from dmha_modules.inference import AgeClassifier, AudioError


def register(commands):
    """Adds ``age`` to the ``dmha`` verbs."""
    parser = add_command(
        commands, "age", run, help="age group and years of audio files (CSV)",
        description="Age group, group probabilities and age in years of audio files.",
    )
    model_options(parser)
    audio_input_options(parser)
    out_option(parser, "CSV file to write")


def _classify(args, paths):
    """The age model's groups and ``{index: age dict or AudioError}`` of ``paths``."""
    with load_model(args.model, args.device, AgeClassifier, args.trust_model) as model:
        task = getattr(model.hparams, "task", None)
        if task != "age":
            raise InputError(f"{args.model}: not an age model (task: {task})")
        results = dict(model.classify_age_files(
            paths, batch_seconds=args.batch_seconds, progress=not args.no_progress
        ))
        return model.groups, results


def run(args):
    """Writes the ages of the good files."""
    check_writable(args.out, parent_must_exist=True)
    ids, paths = read_audio_inputs(args)
    groups, results = _classify(args, paths)
    rows = [["id", "path", "age_group", "age_years"] + [f"p_{g}" for g in groups]]
    failed = 0
    for index, (utterance, path) in enumerate(zip(ids, paths)):
        age = results[index]
        if isinstance(age, AudioError):
            report_skipped(age)
            failed += 1
            continue
        years = "" if age["years"] is None else f"{age['years']:.2f}"
        rows.append([utterance, path, age["group"], years]
                    + [f"{age['probabilities'][g]:.4f}" for g in groups])
    require_output(len(rows) - 1, args.out)
    write_atomic(args.out, lambda out: csv.writer(out).writerows(rows))
    return batch_status(f"{len(paths) - failed} ages written to {args.out}", failed)
