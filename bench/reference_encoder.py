"""The external reference of ``bench/quality.py``: Resemblyzer's pretrained GE2E speaker encoder.

What a user would pick instead of training: a speaker encoder that installs from the
package index with its weights inside (Resemblyzer 0.1.4, GE2E, trained on LibriSpeech
and VoxCeleb 1/2; 256-d embeddings). ``python bench/quality.py --models resemblyzer``
measures it on the splits the trained rows use, without training anything (all its
figures in ``<out>/resemblyzer/figures.json``):

- each split is ``hparams/speaker.yaml``'s for that ``--seed`` (its own preparation, into
  ``<out>/resemblyzer/split_<seed>/manifests``); the age job's split is the same one;
- speaker EER and minDCF on the test trials the recipe scores a speaker model on (the test
  utterances in the order its test stage collects them, ``trial_pairs`` with its
  ``max_trials`` and split seed), cosine scores;
- the EER on every pair of the LibriSpeech files, the trial list ``dmha score`` gets;
- age: linear probes of the embeddings fitted on the training speakers' utterances, their
  regularisation chosen on the validation speakers (logistic regression for the age groups,
  by macro-F1; ridge regression for years, by MAE), measured per test utterance like the
  recipe's age rows (macro-F1, balanced accuracy, MAE in years); also the MAE of each
  test speaker's mean predicted age (``mae_years_per_speaker``).

Not part of the project's lock; install into the venv with::

    pip install --no-deps resemblyzer==0.1.4 webrtcvad-wheels==2.0.14.post1

(``--no-deps``: Resemblyzer's metadata asks for ``webrtcvad``, which no longer imports with
current setuptools, and ``webrtcvad-wheels`` is the same code; and for the ``typing``
backport, which Python 3 has. Its other requirements, librosa, numpy, scipy and torch, come
with the project.) Embeddings are cached in ``<out>/resemblyzer/embeddings.npz``.
"""

import json
import os
import time

import numpy as np
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dmha_modules.age.groups import DEFAULT_AGE_GROUPS
from dmha_modules.io.atomic import write_atomic
from dmha_modules.io.audio import read_audio
from dmha_modules.recipe.build import read_manifest
from dmha_modules.recipe.datasets import SPLITS
from dmha_modules.recipe.training import bucketed_loader_kwargs
from dmha_modules.scoring.metrics import (
    classification_metrics,
    cosine_scores,
    trial_pairs,
    verification_metrics,
)
from dmha_modules.scoring.trials import read_trials

REFERENCE = "resemblyzer"
NAME = ("Resemblyzer GE2E, pretrained (LibriSpeech, VoxCeleb 1/2), no training; "
        "age: linear probes of its embeddings")
INSTALL = "pip install --no-deps resemblyzer==0.1.4 webrtcvad-wheels==2.0.14.post1"
# Regularisation grids of the probes, chosen on each split's validation speakers;
# strongest first, which wins ties.
PROBE_C = np.logspace(-5, 2, 15)
PROBE_ALPHA = np.logspace(4, -2, 13)
# Utterances embedded between two writes of the cache.
CACHE_EVERY = 250


def load_encoder():
    """Resemblyzer's ``VoiceEncoder`` on the CPU and its ``preprocess_wav``.

    Imported here, not at the top: the package is outside the project's lock, and
    ``bench/quality.py`` runs its trained rows without it.
    """
    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError as error:
        raise SystemExit(f"{REFERENCE} row: {error}; install it with: {INSTALL}") from None
    return VoiceEncoder("cpu", verbose=False), preprocess_wav


def embed_files(paths, cache):
    """Embeddings of audio files, read from and added to the ``cache`` file.

    Arguments
    ---------
    paths : iterable of str
        Audio files.
    cache : str
        ``.npz`` of ``paths`` and ``embeddings`` (written every ``CACHE_EVERY`` files).

    Returns
    -------
    dict
        Path -> ``(256,)`` embedding (unit length).
    """
    known = {}
    if os.path.exists(cache):
        with np.load(cache) as stored:
            known = dict(zip(stored["paths"].tolist(), stored["embeddings"]))
    missing = sorted(set(paths) - set(known))
    if not missing:
        return known
    encoder, preprocess_wav = load_encoder()
    # One thread: on the shared 2-core machine two made the small LSTM 7 times slower
    # (0.83 against 0.12 s an utterance).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for count, path in enumerate(missing, start=1):
            wav, _ = read_audio(path, 16000)  # Resemblyzer's sampling rate
            known[path] = encoder.embed_utterance(preprocess_wav(wav.numpy()))
            if count % CACHE_EVERY == 0 or count == len(missing):
                print(f"{REFERENCE}: {count} of {len(missing)} files embedded", flush=True)
                stored = sorted(known)
                write_atomic(cache, lambda f: np.savez(
                    f, paths=np.array(stored), embeddings=np.stack([known[p] for p in stored])),
                    binary=True)
    finally:
        torch.set_num_threads(threads)
    return known


def split_hparams(seed, data, out):
    """``hparams/speaker.yaml`` for ``--seed seed``, its manifests prepared as the recipe's.

    Returns
    -------
    dict
        The loaded hyperparameters; ``manifest_folder`` holds the split's manifests.
    """
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    overrides = {"seed": seed, "data_folder": os.path.join(data, "speechocean762"),
                 "output_folder": os.path.join(out, f"split_{seed}")}
    with open(os.path.join(repo, "hparams", "speaker.yaml")) as f:
        hparams = load_hyperpyyaml(f, overrides)
    hparams["preparations"][hparams["source"]]()
    return hparams


def test_utterances(hparams):
    """The test utterance IDs in the order the recipe's test stage collects them.

    The recipe draws its random trials over that order (``SpeakerBrain.stage_trials``):
    the test loader's length-bucketed batches, longest first.
    """
    dataset = sb.dataio.dataset.DynamicItemDataset(read_manifest(hparams, "test"))
    sampler = bucketed_loader_kwargs(hparams, dataset, train=False)["batch_sampler"]
    return [dataset.data_ids[index] for batch in sampler for index in batch]


def speaker_figures(hparams, embeddings):
    """EER and minDCF on the recipe's test trials of a split, cosine scores."""
    rows = read_manifest(hparams, "test")
    ids = test_utterances(hparams)
    pairs = trial_pairs([rows[u]["spk_id"] for u in ids], max_pairs=hparams["max_trials"],
                        seed=hparams["split_seed"])
    vectors = torch.from_numpy(np.stack([embeddings[rows[u]["wav"]] for u in ids]))
    labels = torch.tensor([same for _, _, same in pairs])
    metrics = verification_metrics(cosine_scores(vectors, pairs), labels,
                                   p_target=hparams["p_target"])
    return {"eer": metrics["eer"], "min_dcf": metrics["min_dcf"], "trials": len(pairs)}


def librispeech_files(root, trial_list):
    """The trials of a labelled trial list of files under ``root`` and the sorted files."""
    trials, _ = read_trials(trial_list)
    return trials, sorted({os.path.join(root, name) for _, _, *names in trials for name in names})


def librispeech_eer(root, trial_list, embeddings):
    """EER on a labelled trial list of files under ``root``, cosine scores."""
    trials, files = librispeech_files(root, trial_list)
    index = {path: i for i, path in enumerate(files)}
    vectors = torch.from_numpy(np.stack([embeddings[path] for path in files]))
    pairs = [(index[os.path.join(root, a)], index[os.path.join(root, b)]) for _, _, a, b in trials]
    labels = torch.tensor([label for _, label, _, _ in trials])
    return verification_metrics(cosine_scores(vectors, pairs), labels)["eer"]


def probe_data(hparams, split, embeddings):
    """Embeddings, age-group indices, ages and speakers of a split's utterances."""
    rows = list(read_manifest(hparams, split).values())
    return (np.stack([embeddings[row["wav"]] for row in rows]),
            np.array([DEFAULT_AGE_GROUPS.index(row["age_group"]) for row in rows]),
            np.array([float(row["age"]) for row in rows]),
            [row["spk_id"] for row in rows])


def fitted_on_train(make, grid, train, valid, loss):
    """The probe ``make(value)`` fitted on ``train`` with the ``grid`` value of least ``loss``
    on ``valid`` (each an ``(inputs, targets)`` pair); ties go to the stronger regularisation,
    listed first."""
    probes = [make(value).fit(*train) for value in grid]
    return min(probes, key=lambda probe: loss(probe.predict(valid[0]), valid[1]))


def age_figures(hparams, embeddings):
    """Age-group macro-F1 and balanced accuracy, MAE in years per test utterance and per test
    speaker, of linear probes fitted on the training speakers."""
    train, valid, test = (probe_data(hparams, split, embeddings) for split in SPLITS)
    x_test, g_test, y_test, speakers = test
    groups = len(DEFAULT_AGE_GROUPS)
    # Class-balanced: the groups are skewed and the figures weigh the classes equally.
    classifier = fitted_on_train(
        lambda c: make_pipeline(StandardScaler(), LogisticRegression(
            C=c, class_weight="balanced", max_iter=2000)),
        PROBE_C, train[:2], valid[:2],
        lambda predicted, target: -classification_metrics(predicted, target, groups)["macro_f1"])
    regressor = fitted_on_train(
        lambda alpha: make_pipeline(StandardScaler(), Ridge(alpha=alpha)),
        PROBE_ALPHA, (train[0], train[2]), (valid[0], valid[2]),
        lambda predicted, target: np.abs(predicted - target).mean())
    metrics = classification_metrics(classifier.predict(x_test), g_test, groups)
    years = regressor.predict(x_test)
    speaker_errors = [abs(years[mask].mean() - y_test[mask][0]) for mask in
                      (np.array(speakers) == speaker for speaker in sorted(set(speakers)))]
    return {"macro_f1": metrics["macro_f1"], "balanced_accuracy": metrics["balanced_accuracy"],
            "mae_years": float(np.abs(years - y_test).mean()),
            "mae_years_per_speaker": float(np.mean(speaker_errors)),
            "probe_C": float(classifier[-1].C), "probe_alpha": float(regressor[-1].alpha)}


def measure(seeds, data, out, librispeech_root, librispeech_trials):
    """Resemblyzer's figures on each split, in ``bench/quality.py``'s layout.

    Arguments
    ---------
    seeds : list of int
        Split seeds.
    data : str
        The ``DMHA_DATA`` folder.
    out : str
        ``bench/quality.py``'s output folder; this row works in ``<out>/resemblyzer``.
    librispeech_root, librispeech_trials : str
        The LibriSpeech folder and its trial list (``quality.librispeech_trials``).

    Returns
    -------
    figures : dict
        ``(task, seed)`` -> metrics (those of ``quality.COLUMNS`` and more).
    seconds : float
        Wall-clock of the whole measurement (embedding included).
    """
    start = time.perf_counter()
    folder = os.path.join(out, REFERENCE)
    splits = {seed: split_hparams(seed, data, folder) for seed in seeds}
    files = {row["wav"] for hparams in splits.values() for split in SPLITS
             for row in read_manifest(hparams, split).values()}
    files |= set(librispeech_files(librispeech_root, librispeech_trials)[1])
    embeddings = embed_files(files, os.path.join(folder, "embeddings.npz"))
    cross = librispeech_eer(librispeech_root, librispeech_trials, embeddings)
    figures = {}
    for seed, hparams in splits.items():
        figures["speaker", seed] = {**speaker_figures(hparams, embeddings),
                                    "librispeech_eer": cross}
        figures["age", seed] = age_figures(hparams, embeddings)
    write_atomic(os.path.join(folder, "figures.json"), lambda f: json.dump(
        {f"{task} {seed}": metrics for (task, seed), metrics in figures.items()}, f, indent=1))
    return figures, time.perf_counter() - start


def parameters():
    """Parameters of the GE2E encoder."""
    encoder, _ = load_encoder()
    return sum(p.numel() for p in encoder.parameters())
