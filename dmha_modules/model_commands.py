"""The ``dmha`` subcommands that use trained models.

- ``dmha embed``: audio files -> embeddings (``.npz``, ``.npy`` or Kaldi ``.ark``/``.scp``).
- ``dmha age``: audio files -> age group, group probabilities and years (CSV).
- ``dmha verify``: two files -> cosine score and same-speaker decision.
- ``dmha score``: a trial list -> scores, and EER / minDCF when it is labelled;
  optionally adaptive s-norm with a cohort.
- ``dmha export``: a training output folder -> a model folder; ``--onnx``
  adds ``embedding.onnx`` (waveform to embedding).
- ``dmha import-seed``: a model of the original research code -> a model folder.

Audio of any sample rate and channel count is accepted (resampled, averaged
to mono). A bad file is reported on stderr and skipped; the others are
processed and the exit status is 1.

Example
-------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_model_commands(parser.add_subparsers(dest="command"))
>>> args = parser.parse_args(["embed", "--model", "m", "--out", "e.npz", "a.wav"])
>>> args.inputs, args.batch_seconds
(['a.wav'], 120.0)
"""

import contextlib
import csv
import io
import os
import sys
import tempfile

import numpy as np
import torch

from dmha_modules.embedding_io import check_output, write_embeddings
from dmha_modules.inference import AgeClassifier, AudioError, DMHAClassifier
from dmha_modules.metrics import adaptive_snorm, cosine_scores, verification_metrics
from dmha_modules.runtime import keep_freed_memory

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif", ".au")


class CommandError(Exception):
    """A problem with a command's inputs that stops it; the message says what to fix.

    Example
    -------
    >>> raise CommandError("trials.txt: no trials")
    Traceback (most recent call last):
    ...
    dmha_modules.model_commands.CommandError: trials.txt: no trials
    """


def check_out_folder(path):
    """Refuses an output whose folder does not exist, before any work is done."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"{path}: the folder {folder} does not exist")


def _model_options(parser):
    parser.add_argument("--model", required=True, help="model folder (hyperparams.yaml, *.ckpt)")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda when available, else cpu)",
    )


def _input_options(parser):
    parser.add_argument("inputs", nargs="*", help="audio files")
    parser.add_argument(
        "--list", dest="list_file",
        help="file with one audio path per line, or 'id path' (Kaldi wav.scp style)",
    )
    parser.add_argument("--folder", help="embed every audio file under this folder")
    _batching_options(parser)


def _batching_options(parser):
    parser.add_argument(
        "--batch_seconds", "--batch-seconds", type=float, default=120.0,
        help="most padded audio per batch, in seconds; files are batched by length "
        "(default: 120)",
    )
    parser.add_argument(
        "--no_progress", "--no-progress", action="store_true", help="no progress bar"
    )


def add_model_commands(commands):
    """Adds ``embed``, ``age``, ``verify``, ``score``, ``export`` and ``import-seed``."""
    embed = commands.add_parser(
        "embed", help="embed audio files with a model folder",
        description="Embed audio files. Ids are paths without extension (relative to "
        "--folder), or the first column of a two-column --list.",
    )
    _model_options(embed)
    _input_options(embed)
    embed.add_argument(
        "--out", required=True,
        help="embeddings file: .npz (one array per id), .npy (+ .txt of ids) or "
        "Kaldi .ark (+ .scp)",
    )
    embed.add_argument(
        "--onnx", action="store_true",
        help="run <model>/embedding.onnx with ONNX Runtime (see dmha export --onnx)",
    )

    age = commands.add_parser(
        "age", help="age group and years of audio files (CSV)",
        description="Age group, group probabilities and age in years of audio files.",
    )
    _model_options(age)
    _input_options(age)
    age.add_argument("--out", required=True, help="CSV file to write")

    verify = commands.add_parser(
        "verify", help="are two audio files the same speaker?",
        description="Cosine score of two files' embeddings and the decision at the "
        "threshold (by default the model's EER threshold on its test speakers).",
    )
    _model_options(verify)
    verify.add_argument("enrol", help="first audio file")
    verify.add_argument("test", help="second audio file")
    verify.add_argument("--threshold", type=float, help="cosine above which it is a match")

    score = commands.add_parser(
        "score", help="score a trial list; EER and minDCF when labelled",
        description="Score trials. Lines: 'label enrol test' (VoxCeleb, label 1/0), "
        "'enrol test target|nontarget' (Kaldi) or 'enrol test' (unlabelled).",
    )
    _model_options(score)
    score.add_argument("--trials", required=True, help="trial list")
    score.add_argument(
        "--data_root", "--data-root", default=".",
        help="folder the trial paths are relative to (default: current folder)",
    )
    score.add_argument("--out", required=True, help="scores file: 'enrol test score' lines")
    score.add_argument("--cohort", help="list of cohort audio files: adaptive s-norm")
    score.add_argument("--top_n", "--top-n", type=int, default=200,
                       help="cohort scores per utterance for s-norm (default: 200)")
    score.add_argument("--p_target", "--p-target", type=float, default=0.01,
                       help="target prior of minDCF (default: 0.01)")
    score.add_argument("--plot", help="PNG of the score distributions and DET curve")
    _batching_options(score)

    export = commands.add_parser(
        "export", help="write a model folder from a training output folder; ONNX",
        description="Write <experiment>/model (or --out) from the best checkpoint of a "
        "recipes/train.py output folder, checked to load strictly in SpeechBrain and to "
        "reproduce the trained embedding; with --onnx also embedding.onnx. "
        "Or, with --model, add embedding.onnx to an existing model folder.",
    )
    source = export.add_mutually_exclusive_group(required=True)
    source.add_argument("--experiment", help="recipes/train.py output folder")
    source.add_argument("--model", help="existing model folder (with --onnx)")
    export.add_argument("--out", help="model folder to write (default: <experiment>/model)")
    export.add_argument("--onnx", action="store_true",
                        help="also write embedding.onnx: waveforms and lengths -> embeddings")

    seed = commands.add_parser(
        "import-seed", help="model folder from a model of the original research code",
        description="Convert a checkpoint (.chkpt) and settings (.pkl) of the original "
        "Double Multi-Head Attention code into a model folder. Nothing pickled is run: "
        "only argparse.Namespace settings and tensors are accepted.",
    )
    seed.add_argument("--checkpoint", required=True, help="the original's .chkpt file")
    seed.add_argument("--config", required=True, help="the original's _config.pkl file")
    seed.add_argument("--out", required=True, help="model folder to write")
    seed.add_argument("--sample_rate", "--sample-rate", type=int, default=16000,
                      help="sample rate the model was trained at (default: 16000)")


def read_inputs(args):
    """``(ids, paths)`` from positional files, ``--list`` and ``--folder``."""
    ids, paths = [], []

    def add(utterance, path):
        ids.append(utterance)
        paths.append(path)

    for path in args.inputs:
        add(os.path.splitext(path)[0], path)
    if args.list_file:
        with open(args.list_file, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) > 2:
                    raise CommandError(
                        f"{args.list_file}:{number}: expected 'path' or 'id path', "
                        f"got {len(fields)} fields"
                    )
                add(fields[0] if len(fields) == 2 else os.path.splitext(fields[0])[0],
                    fields[-1])
    if args.folder:
        found = []
        for root, _, files in os.walk(args.folder):
            found += [os.path.join(root, name) for name in files
                      if name.lower().endswith(AUDIO_EXTENSIONS)]
        if not found:
            raise CommandError(f"{args.folder}: no audio files ({', '.join(AUDIO_EXTENSIONS)})")
        for path in sorted(found):
            add(os.path.splitext(os.path.relpath(path, args.folder))[0], path)
    if not paths:
        raise CommandError("no audio given: pass files, --list or --folder")
    seen = set()
    repeated = [i for i in ids if i in seen or seen.add(i)]
    if repeated:
        raise CommandError(f"repeated utterance ids: {repeated[:5]}")
    return ids, paths


@contextlib.contextmanager
def load_model(folder, device, cls=DMHAClassifier):
    """A model folder loaded with ``cls`` (files linked into a temporary folder)."""
    if not os.path.exists(os.path.join(folder, "hyperparams.yaml")):
        raise CommandError(f"{folder}: not a model folder (no hyperparams.yaml)")
    with tempfile.TemporaryDirectory(prefix="dmha-model-") as savedir:
        yield cls.from_hparams(
            source=os.path.abspath(folder), savedir=savedir, run_opts={"device": device}
        )


def _report(error):
    print(f"dmha: skipped {error}", file=sys.stderr)


def embed_paths(model, paths, args, embed=None):
    """Embeddings ``(N, E)`` of ``paths`` (NaN rows for bad files) and the failed indices."""
    results = dict(model.embed_files(
        paths, batch_seconds=args.batch_seconds, progress=not args.no_progress
    )) if embed is None else dict(embed)
    failed = sorted(i for i, result in results.items() if isinstance(result, AudioError))
    for index in failed:
        _report(results[index])
    good = [results[i] for i in range(len(paths)) if i not in failed]
    size = good[0].shape[-1] if good else 0
    embeddings = np.full((len(paths), size), np.nan, dtype=np.float32)
    for index, result in results.items():
        if index not in failed:
            embeddings[index] = result.numpy()
    return embeddings, failed


def run_embed(args):
    check_out_folder(args.out)
    ids, paths = read_inputs(args)
    try:
        check_output(args.out, ids)  # before the work, not after it
    except ValueError as error:
        raise CommandError(str(error)) from None
    with load_model(args.model, args.device) as model:
        embed = None
        if args.onnx:
            from dmha_modules.inference import embed_files
            from dmha_modules.onnx_export import OnnxEmbedder

            path = os.path.join(args.model, "embedding.onnx")
            if not os.path.exists(path):
                raise CommandError(f"{path}: not found; write it with dmha export --model "
                                   f"{args.model} --onnx")
            embed = embed_files(OnnxEmbedder(path), paths, model.hparams.sample_rate,
                                batch_seconds=args.batch_seconds,
                                progress=not args.no_progress)
        embeddings, failed = embed_paths(model, paths, args, embed)
    keep = [i for i in range(len(paths)) if i not in failed]
    written = write_embeddings(args.out, [ids[i] for i in keep], embeddings[keep])
    print(f"{len(keep)} embeddings written to {', '.join(written)}"
          + (f"; {len(failed)} files failed" if failed else ""))
    return 1 if failed else 0


def run_age(args):
    check_out_folder(args.out)
    ids, paths = read_inputs(args)
    with load_model(args.model, args.device, AgeClassifier) as model:
        if getattr(model.hparams, "task", None) != "age":
            raise CommandError(f"{args.model}: not an age model (task: "
                               f"{getattr(model.hparams, 'task', None)})")
        results = dict(model.classify_age_files(
            paths, batch_seconds=args.batch_seconds, progress=not args.no_progress
        ))
        groups = model.groups
    failed = 0
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["id", "path", "age_group", "age_years"] + [f"p_{g}" for g in groups])
    for index, (utterance, path) in enumerate(zip(ids, paths)):
        result = results[index]
        if isinstance(result, AudioError):
            _report(result)
            failed += 1
            continue
        writer.writerow([utterance, path, result["group"], f"{result['years']:.2f}"]
                        + [f"{result['probabilities'][g]:.4f}" for g in groups])
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text.getvalue())
    os.replace(tmp, args.out)
    print(f"{len(paths) - failed} ages written to {args.out}"
          + (f"; {failed} files failed" if failed else ""))
    return 1 if failed else 0


def run_verify(args):
    with load_model(args.model, args.device) as model:
        threshold = args.threshold
        if threshold is None:
            threshold = getattr(model.hparams, "verification_threshold", None)
        if threshold is None:
            raise CommandError(f"{args.model} has no verification threshold (an age model, "
                               "or imported); pass --threshold")
        enrol, test = model.embed_file(args.enrol), model.embed_file(args.test)
    score = float(torch.nn.functional.cosine_similarity(enrol, test, dim=0))
    same = score > threshold
    print(f"score {score:.4f} threshold {threshold:.4f}: "
          + ("same speaker" if same else "different speakers"))
    return 0


def read_trials(path, data_root):
    """Trials ``(enrol path, test path, label or None)`` of a trial list (see ``dmha score``)."""
    trials = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) == 3 and fields[0] in ("0", "1"):
                label, enrol, test = int(fields[0]), fields[1], fields[2]
            elif len(fields) == 3 and fields[2] in ("target", "nontarget"):
                enrol, test, label = fields[0], fields[1], int(fields[2] == "target")
            elif len(fields) == 2:
                (enrol, test), label = fields, None
            else:
                raise CommandError(
                    f"{path}:{number}: expected 'label enrol test', 'enrol test "
                    f"target|nontarget' or 'enrol test', got {line.strip()!r}")
            trials.append((os.path.join(data_root, enrol), os.path.join(data_root, test), label))
    if not trials:
        raise CommandError(f"{path}: no trials")
    if len({label is None for *_, label in trials}) > 1:
        raise CommandError(f"{path}: some trials are labelled and some are not")
    return trials


def run_score(args):
    check_out_folder(args.out)
    trials = read_trials(args.trials, args.data_root)
    paths = sorted({p for enrol, test, _ in trials for p in (enrol, test)})
    index = {path: i for i, path in enumerate(paths)}
    with load_model(args.model, args.device) as model:
        embeddings, failed = embed_paths(model, paths, args)
        if args.cohort:
            with open(args.cohort, encoding="utf-8") as f:
                cohort_paths = [line.strip() for line in f if line.strip()]
            cohort, cohort_failed = embed_paths(model, cohort_paths, args)
            cohort = np.delete(cohort, cohort_failed, axis=0)
            if len(cohort) < 2:
                raise CommandError(f"{args.cohort}: fewer than 2 usable cohort files")
    bad = set(failed)
    kept = [t for t in trials if index[t[0]] not in bad and index[t[1]] not in bad]
    pairs = torch.tensor([(index[e], index[t]) for e, t, _ in kept], dtype=torch.long)
    pairs = pairs.reshape(-1, 2)  # (0, 2), not (0,), when every trial was skipped
    embeddings = torch.from_numpy(embeddings)
    if args.cohort:
        scores = adaptive_snorm(embeddings, pairs, torch.from_numpy(cohort), args.top_n)
    else:
        scores = cosine_scores(embeddings, pairs)
    lines = [f"{os.path.relpath(e, args.data_root)} {os.path.relpath(t, args.data_root)} "
             f"{s:.6f}\n" for (e, t, _), s in zip(kept, scores.tolist())]
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, args.out)
    print(f"{len(kept)} trials scored into {args.out}"
          + (f"; {len(trials) - len(kept)} skipped for failed files" if failed else ""))
    if kept and kept[0][2] is not None:
        labels = torch.tensor([label for *_, label in kept])
        if labels.min() == labels.max():
            print("EER/minDCF need both target and non-target trials", file=sys.stderr)
        else:
            metrics = verification_metrics(scores, labels, p_target=args.p_target)
            print(f"EER {100 * metrics['eer']:.2f}% (threshold {metrics['eer_threshold']:.4f}) "
                  f"minDCF(p_target={args.p_target}) {metrics['min_dcf']:.4f}")
            if args.plot:
                from dmha_modules.plots import plot_verification_scores

                plot_verification_scores(scores, labels, args.plot, title=args.trials,
                                         p_target=args.p_target)
    return 1 if failed else 0


def run_export(args):
    if args.experiment:
        from dmha_modules.export import export_experiment

        folder, cosine = export_experiment(args.experiment, args.out)
        print(f"{folder}: written; reloads strictly, cosine {cosine:.6f} to the trained model")
    else:
        if not args.onnx:
            raise CommandError("--model only adds ONNX to a model folder: pass --onnx")
        folder = args.model
    if args.onnx:
        from dmha_modules.onnx_export import export_onnx

        with load_model(folder, "cpu") as model:
            path = os.path.join(folder, "embedding.onnx")
            export_onnx(model.mods.compute_features, model.mods.mean_var_norm,
                        model.mods.embedding_model, path)
        print(f"{path}: written and checked against PyTorch")
    return 0


def run_import_seed(args):
    from dmha_modules.seed import import_seed

    folder, cosine = import_seed(args.checkpoint, args.config, args.out, args.sample_rate)
    print(f"{folder}: written; reloads strictly, cosine {cosine:.6f} to the converted model")
    return 0


COMMANDS = {
    "embed": run_embed,
    "age": run_age,
    "verify": run_verify,
    "score": run_score,
    "export": run_export,
    "import-seed": run_import_seed,
}


def run(args):
    """Runs a model command; returns the exit status (1 when some inputs failed)."""
    keep_freed_memory()
    try:
        return COMMANDS[args.command](args)
    except (CommandError, AudioError, OSError) as error:
        print(f"dmha: {error}", file=sys.stderr)
        return 1
