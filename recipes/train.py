#!/usr/bin/env python3
"""Trains a Double Multi-Head Attention model for age groups or speakers.

One recipe, two tasks, chosen by the YAML file:

    python recipes/train.py hparams/age.yaml       # age groups (+ years)
    python recipes/train.py hparams/speaker.yaml   # speaker verification

Every setting lives in the YAML and can be overridden on the command line
(``--data_folder ...``, ``--number_of_epochs 5``, ...). The corpus is chosen
by ``--source`` (``kaldi``, the default, ``labels``, ``commonvoice``,
``voxceleb`` or ``manifests``, each with its own options: see
:mod:`dmha_modules.recipe.inputs`), whose manifests and trial list are checked
before training starts. Multi-process training:
``torchrun --nproc_per_node=N recipes/train.py hparams/age.yaml`` (gloo on
CPU, nccl on GPU). Rerunning the same command resumes from the last
checkpoint; a second training in the same output folder stops at once.
Bad input stops the recipe with exit status 1 and one message per problem.

Both tasks share ``DMHABrain`` (features, embeddings, classifier, checkpoint
selection); ``AgeBrain`` and ``SpeakerBrain`` say what differs: the targets,
the metrics and the test outputs (all three in :mod:`dmha_modules.recipe.brains`).

Outputs, in ``output_folder``: ``train_log.txt``, ``test_metrics.json``,
``confusion_matrix.png``, ``reliability_diagram.png`` and
``age_calibration.json`` (age: see ``AgeBrain.calibrate``) or
``verification_scores.png`` and ``test_scores.txt`` (speaker),
``embeddings_pca.png``, ``manifests/`` and ``model/`` (the best checkpoint
with its hyperparameters and, for age, its calibration).
"""

import contextlib
import errno
import logging
import os
import shutil
import sys

from dmha_modules.environment import require_compiled_dependencies

# Before speechbrain imports torchaudio: a torchaudio built for another torch
# stops the recipe with one line, not a linker traceback.
require_compiled_dependencies()

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import ddp_barrier, if_main_process, run_on_main

from dmha_modules.allocator import keep_freed_memory
from dmha_modules.io.atomic import atomic_paths
from dmha_modules.recipe.brains import AgeBrain, SpeakerBrain
from dmha_modules.recipe.checkpoints import refuse_another_model
from dmha_modules.recipe.preemption import PREEMPTED, STOP, Preempted
from dmha_modules.cli.errors import INTERRUPTED
from dmha_modules.recipe.datasets import SPLITS, dataio_prep
from dmha_modules.recipe.build import (
    best_checkpoint_kwargs,
    build_model,
    gender_classes,
    load_initial_weights,
    make_label_encoder,
    manifest_path,
)
from dmha_modules.folders.model_folder import write_experiment_model
from dmha_modules.folders.safety import ModelFolderError
from dmha_modules.prepare import BadInputError, DownloadError
from dmha_modules.recipe.inputs import (
    RecipeInputError,
    check_manifests,
    check_source_options,
    copy_prepared_manifests,
)
from dmha_modules.recipe.training import (
    HeldLog,
    OutputFolderError,
    bucketed_loader_kwargs,
    default_ddp_backend,
    output_folder_lock,
)

logger = logging.getLogger(__name__)

# What stops the recipe with a message rather than a traceback: bad input.
INPUT_PROBLEMS = (
    RecipeInputError, OutputFolderError, BadInputError, DownloadError, ModelFolderError)


def load_hparams(hparams_file, overrides):
    """The YAML with its overrides; a folder that cannot be written is a message, not a traceback.

    Loading creates ``save_folder`` (SpeechBrain's checkpointer does), so a
    read-only output folder shows here.
    """
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            return load_hyperpyyaml(fin, overrides)
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        advice = "" if error.filename == hparams_file else "; choose a writable --output_folder"
        raise OutputFolderError(f"{error.filename}: {error.strerror}{advice}") from None


def prepare_manifests(hparams):
    """Writes the source's manifests into ``manifest_folder`` once they pass their checks.

    Ready manifests (``source: manifests``) are checked where they are, so
    problems name the files as given, then copied (:func:`prepare_beside`).

    Returns
    -------
    dict
        The trial lists of the held-out splits (``check_manifests``).
    """
    if hparams["source"] == "manifests":
        check_manifests(hparams, hparams["prepared_folder"])
    run_on_main(prepare_beside, args=[hparams])
    trial_lists = check_manifests(hparams, hparams["manifest_folder"])
    test = manifest_path(hparams["manifest_folder"], "test")
    if os.path.basename(test) != "test.csv":
        logger.info("No test split (labels files have none): testing on %s", test)
    for split, trial_list in trial_lists.items():
        if hparams["task"] == "speaker":
            logger.info("%s trials: %s", split,
                        "random pairs of held-out speakers" if trial_list is None
                        else f"{len(trial_list.trials)} of {', '.join(trial_list.origin)}")
    return trial_lists


def prepare_beside(hparams):
    """Prepares and checks the manifests beside ``manifest_folder``, which they replace if accepted.

    A refused run (bad data, an output folder that trained on other classes)
    leaves the folder's manifests as they were. The new ones start as a copy
    of those, whose run record lets an unchanged preparation be skipped.
    Problems name the files where they would have been written.
    """
    folder = hparams["manifest_folder"]
    with atomic_paths(folder) as (staging,):
        if os.path.isdir(folder):
            shutil.copytree(folder, staging)
        staged = {**hparams, "manifest_folder": staging}
        try:
            if hparams["source"] == "manifests":
                copy_prepared_manifests(hparams["prepared_folder"], staging)
            else:
                hparams["preparations"][hparams["source"]](save_folder=staging)
            check_manifests(staged, staging)
            genders = gender_classes(staged) if hparams["task"] == "age" else []
            if hparams["task"] == "age" and hparams["gender_loss_weight"] > 0 \
                    and len(genders) < 2:
                raise RecipeInputError([
                    f"{manifest_path(staging, 'train')}: gender_loss_weight "
                    f"{hparams['gender_loss_weight']} needs a gender column with two or more "
                    "genders; found " + (", ".join(genders) or "none")])
        except RecipeInputError as error:
            raise RecipeInputError(
                [problem.replace(staging, folder) for problem in error.problems]) from None


def start_from_model_folder(hparams):
    """``init_from``: the embedding model starts from a model folder's.

    Done before any data is prepared, so a folder that does not fit stops the
    recipe at once. A resumed run goes on from its checkpoint, which holds the
    started weights.
    """
    if hparams.get("init_from") and hparams["checkpointer"].find_checkpoint() is None:
        load_initial_weights(hparams["embedding_model"], hparams["init_from"])
        logger.info("Embedding model initialised from %s", hparams["init_from"])


def run_experiment(hparams, run_opts, trial_lists):
    """Trains, tests and writes the model folder."""
    label_encoders = {split: make_label_encoder(hparams, split) for split in SPLITS}
    modules, group_loss, age_decoding = build_model(hparams, label_encoders["train"])
    brain_kwargs = {
        "modules": modules,
        "opt_class": hparams["opt_class"],
        "hparams": hparams,
        "run_opts": run_opts,
        "checkpointer": hparams["checkpointer"],
    }
    if hparams["task"] == "age":
        brain = AgeBrain(age_decoding, label_encoders, group_loss, **brain_kwargs)
    else:
        brain = SpeakerBrain(trial_lists, label_encoders, group_loss, **brain_kwargs)
    datasets = dataio_prep(hparams, label_encoders, brain.target_keys,
                           (age_decoding or {}).get("gender_classes"))

    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=bucketed_loader_kwargs(hparams, datasets["train"], train=True),
        valid_loader_kwargs=bucketed_loader_kwargs(hparams, datasets["valid"], train=False),
    )
    if hparams["task"] == "age":
        brain.on_evaluate_start(**best_checkpoint_kwargs(hparams))  # as the test loads it
        brain.calibrate(datasets["valid"],
                        bucketed_loader_kwargs(hparams, datasets["valid"], train=False))
    brain.evaluate(
        datasets["test"],
        test_loader_kwargs=bucketed_loader_kwargs(hparams, datasets["test"], train=False),
        **best_checkpoint_kwargs(hparams),
    )
    if if_main_process() and "classifier" in brain.modules:  # a years-only model is no classifier
        # Without the DDP wrappers.
        trained = {name: getattr(mod, "module", mod) for name, mod in brain.modules.items()}
        write_experiment_model(
            hparams, trained, label_encoders["train"], age_decoding, brain.test_metrics
        )


def train(argv):
    """Checks the options, takes the output folder, prepares and checks the data, trains.

    Nothing is written into the output folder (``hyperparams.yaml``,
    ``manifests/``, logs) before the lock is held and the checkpoints, the
    options and the data have passed their checks.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    run_opts = default_ddp_backend(run_opts)
    keep_freed_memory()
    sb.utils.distributed.ddp_init_group(run_opts)
    held_log = HeldLog()
    if if_main_process():  # SpeechBrain's console format until its log set-up
        logging.basicConfig(level=logging.INFO, format="%(name)s - %(message)s",
                            stream=sys.stdout)
        logging.getLogger().addHandler(held_log)
    hparams = load_hparams(hparams_file, overrides)
    check_source_options(hparams)
    # Under DDP the main process holds the folder for all ranks.
    command = " ".join(["recipes/train.py", *argv])
    lock = output_folder_lock(hparams["output_folder"], command) if if_main_process() \
        else contextlib.nullcontext()
    with lock:
        refuse_another_model(hparams["checkpointer"], hparams)
        start_from_model_folder(hparams)
        trial_lists = prepare_manifests(hparams)
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"],
            hyperparams_to_save=hparams_file,
            overrides=overrides,
        )
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.FileHandler):  # log.txt, set up just now
                held_log.write_to(handler)
        run_experiment(hparams, run_opts, trial_lists)
    # Under DDP every rank ends once rank 0 has written the model folder: a rank
    # that tears down its process group while another still uses it can abort
    # (gloo: "terminate called without an active exception"), and torchrun then
    # kills the others.
    ddp_barrier()


def main(argv=None):
    """Runs the recipe; returns the exit status: 1, with one message per problem, on bad input.

    Ctrl-C is one line and status 130 (what the shell gives a process that
    SIGINT ended); checkpoints are written whole, so the last one is kept.
    SIGTERM (a cluster's notice of preemption) stops training at the end of a
    batch with a checkpoint, and status 143 (``PREEMPTED``) asks the batch
    script to requeue the job (docs/training.md, "Clusters").
    """
    STOP.install()
    try:
        train(sys.argv[1:] if argv is None else argv)
    except INPUT_PROBLEMS as error:
        print(f"recipes/train.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("recipes/train.py: interrupted; the last checkpoint is kept: rerun the same "
              "command to resume", file=sys.stderr)
        return INTERRUPTED
    except Preempted as stopped:
        print(f"recipes/train.py: {stopped}; rerun the same command to resume",
              file=sys.stderr)
        return PREEMPTED
    finally:
        if torch.distributed.is_initialized():  # before the interpreter's teardown
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
