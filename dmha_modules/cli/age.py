"""``dmha age``: audio files -> age group, group probabilities, years and gender (CSV).

Columns: ``id, path, age_group, age_years``, ``p_<group>`` per group,
``age_years_low, age_years_high`` (the interval of one utterance's age, of
the coverage the summary states; empty for model folders written before the
calibration, which the summary says) and, for models with a gender head,
``gender, p_gender`` (the probability of that gender). ``age_years`` is
empty for models trained without ages in years, ``age_group`` where an
imported ordinal model's rule reaches no group; bad files are reported and
left out. Years and their interval are clipped to the model's training ages,
and a file longer than 10 s is taken as the mean embedding of its chunks (see
:class:`dmha_modules.inference.AgeClassifier`).
"""

import csv

from dmha_modules.io.atomic import write_atomic
from dmha_modules.cli.errors import InputError, batch_status, report_skipped, require_output
from dmha_modules.cli.inputs import check_audio_outputs, load_model, read_audio_inputs
from dmha_modules.cli.options import (
    add_command,
    audio_input_options,
    model_options,
    out_option,
    precision_option,
)
from dmha_modules.inference import AgeClassifier, AudioError


def register(commands):
    """Adds ``age`` to the ``dmha`` verbs."""
    parser = add_command(
        commands, "age", run, help="age group, years (with an interval) and gender of audio files",
        description="Age group, group probabilities, age in years with an interval and, for "
        "models with a gender head, gender of audio files (CSV).",
    )
    model_options(parser)
    precision_option(parser)
    audio_input_options(parser)
    out_option(parser, "CSV file to write")


def _classify(args, paths):
    """The model's description (``describe``) and ``{index: age dict or AudioError}``."""
    with load_model(args.model, args.device, AgeClassifier, args.trust_model,
                    precision=args.precision) as model:
        task = getattr(model.hparams, "task", None)
        if task != "age":
            raise InputError(f"{args.model}: not an age model (task: {task})")
        results = dict(model.classify_age_files(
            paths, batch_seconds=args.batch_seconds, progress=not args.no_progress
        ))
        return describe(args.model, model), results


def describe(folder, model):
    """The groups, whether there is a gender head, and what the interval columns hold."""
    hparams = model.hparams
    if model.interval_half_width is not None:
        note = (f"age_years_low..age_years_high: {100 * hparams.interval_coverage:g} % "
                f"interval for one utterance (+-{model.interval_half_width:.1f} years, calibrated "
                f"on {hparams.calibration_speakers} validation speakers)")
    elif getattr(hparams, "interval_coverage", None) is not None:
        note = (f"age years without an interval: {hparams.calibration_speakers} validation "
                f"speakers are too few for {100 * hparams.interval_coverage:g} % coverage")
    elif hasattr(hparams, "temperature"):
        note = "no interval: the model has no ages in years; probabilities calibrated"
    else:
        note = (f"age years without an interval: {folder} was not calibrated (written "
                "before the calibration); probabilities uncalibrated")
    return {"groups": model.groups, "gender": "gender_head" in model.mods, "note": note}


def _row(utterance, path, age, model):
    """One CSV row (see the module docstring)."""
    years = "" if age["years"] is None else f"{age['years']:.2f}"
    interval = ["", ""] if age["years_interval"] is None else [
        f"{bound:.2f}" for bound in age["years_interval"]]
    row = ([utterance, path, age["group"], years]
           + [f"{age['probabilities'][g]:.4f}" for g in model["groups"]] + interval)
    if model["gender"]:
        row += [age["gender"], f"{age['gender_probability']:.4f}"]
    return row


def run(args):
    """Writes the ages of the good files."""
    ids, paths = read_audio_inputs(args)
    check_audio_outputs(args, paths, [("--out", args.out, "file")])
    model, results = _classify(args, paths)
    rows = [["id", "path", "age_group", "age_years"] + [f"p_{g}" for g in model["groups"]]
            + ["age_years_low", "age_years_high"] + (["gender", "p_gender"] if model["gender"]
                                                     else [])]
    failed = 0
    for index, (utterance, path) in enumerate(zip(ids, paths)):
        age = results[index]
        if isinstance(age, AudioError):
            report_skipped(age)
            failed += 1
            continue
        rows.append(_row(utterance, path, age, model))
    require_output(len(rows) - 1, args.out)
    write_atomic(args.out, lambda out: csv.writer(out).writerows(rows))
    print(model["note"])
    return batch_status(f"{len(paths) - failed} ages written to {args.out}", failed)
