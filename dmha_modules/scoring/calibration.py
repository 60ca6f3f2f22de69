"""Calibrated verification scores: cosine to log-likelihood ratio, and the decision thresholds.

A cosine score says which trials are more alike, not how likely a match is.
Calibration maps it to a log-likelihood ratio ``llr = log p(s | target) /
p(s | non-target)``, which a decision compares with a threshold that follows
from the operating point alone.

- ``fit_calibration``: linear logistic regression ``llr = a * score + b (+
  c . quality)`` on a development trial list, as BOSARIS's
  ``train_linear_calibration`` (the fit and the thresholds are in
  :mod:`dmha_modules.scoring.llr_fit`).
- ``bayes_threshold`` and ``far_threshold``: the LLR threshold of a target
  prior, or of a target false-accept rate read from development trials.
- ``Calibration``: the fitted map and the threshold, stored as
  ``calibration.json`` in a model folder (``save_calibration``,
  ``load_calibration``).

The map can take cosines of centred embeddings, standardised by their list's
statistics (``centre``, ``score_stats``; see :mod:`dmha_modules.scoring.list_norm`).
"""

import dataclasses
import hashlib
import json
import logging
import math
import os
import re

import numpy as np

from dmha_modules.io.atomic import write_atomic
from dmha_modules.scoring.llr_fit import (  # public here too: the steps of fit_calibration
    QUALITY_TERMS,
    bayes_threshold,
    far_threshold,
    fit_linear_llrs,
    quality_features,
)
from dmha_modules.scoring.metrics import as_numpy

logger = logging.getLogger(__name__)

SCORE_CALIBRATION_FILE = "calibration.json"
FORMAT = "dmha-calibration/1"


@dataclasses.dataclass
class Calibration:
    """A linear calibration of cosine scores to LLRs, with its decision threshold.

    ``llr = weights["score"] * score + sum of weights[term] * term + offset``
    (the terms of ``quality``, see ``quality_features``); a trial is a match
    when ``llr > threshold``. A model folder's ``calibration.json``.

    Arguments
    ---------
    weights : dict
        ``{"score": a, <quality term>: c, ...}``.
    offset : float
        ``b``.
    quality : list of str
        Quality measures of the terms (``QUALITY_TERMS``); empty for none.
    prior : float
        The effective prior the map was trained at.
    threshold : float, optional
        The LLR threshold of the decisions.
    operating_point : dict, optional
        How the threshold was chosen: ``{"target_far": x}`` or
        ``{"p_target": p}`` (the Bayes threshold).
    development : dict
        What it was fitted on and how it did there.
    centre : list, optional
        The development list's mean embedding when the map takes cosines of
        centred embeddings (see ``scoring_centre``); None for plain cosines
        (calibrations written before centring).
    score_stats : list, optional
        ``[mean, sd]`` of the development list's cosines between all pairs of
        its files when the map takes cosines standardised by their list's
        (see ``scoring_stats``); None when it takes them as they are.
    embedding_model_sha256 : str, optional
        The fingerprint (:func:`embedding_model_sha256`) of the embedding
        model it was fitted on; None in calibrations written before it was
        recorded.

    Example
    -------
    >>> calibration = Calibration({"score": 10.0}, -5.0)
    >>> calibration.llrs([0.2, 0.9]).tolist()
    [-3.0, 4.0]
    >>> calibration.with_operating_point(np.array([-4.0, -1.0]), p_target=0.01).threshold
    4.59511985013459
    """

    weights: dict
    offset: float
    quality: list = dataclasses.field(default_factory=list)
    prior: float = 0.5
    threshold: float = None
    operating_point: dict = None
    development: dict = dataclasses.field(default_factory=dict)
    centre: list = None
    score_stats: list = None
    embedding_model_sha256: str = None

    def llrs(self, scores, seconds=None):
        """LLRs ``(N,)`` of cosine scores ``(N,)`` (and ``(N, 2)`` durations for ``duration``)."""
        llrs = self.weights["score"] * as_numpy(scores).astype(np.float64).reshape(-1)
        if self.quality:
            if seconds is None:
                raise ValueError(f"this calibration needs the trials' {', '.join(self.quality)}")
            features, names = quality_features(self.quality, seconds)
            llrs = llrs + features @ np.array([self.weights[name] for name in names])
        return llrs + self.offset

    def with_operating_point(self, nontarget_llrs, target_far=None, p_target=None):
        """A copy with the threshold of ``target_far`` (from ``nontarget_llrs``) or ``p_target``."""
        if (target_far is None) == (p_target is None):
            raise ValueError("give one of target_far and p_target")
        if target_far is not None:
            threshold = far_threshold(nontarget_llrs, target_far)
            point = {"target_far": float(target_far)}
        else:
            threshold, point = bayes_threshold(p_target), {"p_target": float(p_target)}
        return dataclasses.replace(self, threshold=threshold, operating_point=point)

    def describe(self):
        """One line: the map and the operating point, for the verbs' output."""
        terms = " ".join(f"{weight:+.4g}*{name}" for name, weight in self.weights.items()
                         if name != "score")
        cosine = self.score_name().replace(" ", "_")
        line = f"llr = {self.weights['score']:.4g}*{cosine} {terms} {self.offset:+.4g}"
        return " ".join(line.split()) + f"; threshold {self.threshold:.4f} ({self.point_name()})"

    def score_name(self):
        """What the map takes: ``cosine``, ``centred cosine`` or ``standardised centred cosine``."""
        name = "cosine" if self.centre is None else "centred cosine"
        return name if self.score_stats is None else f"standardised {name}"

    def point_name(self):
        """The operating point in words: ``target FAR 1%`` or ``Bayes, p_target 0.01``."""
        if self.operating_point is None:
            return "no operating point"
        if "target_far" in self.operating_point:
            return f"target FAR {100 * self.operating_point['target_far']:g}%"
        return f"Bayes, p_target {self.operating_point['p_target']:g}"


def fit_calibration(scores, labels, quality=(), seconds=None, prior=0.5):
    """A ``Calibration`` of development scores by linear logistic regression.

    Arguments
    ---------
    scores : array-like
        Cosine scores ``(N,)`` of development trials.
    labels : array-like
        ``(N,)``: 1 or True for target trials, 0 or False else; both occur.
    quality : sequence of str
        Quality measures to add as terms (``QUALITY_TERMS``).
    seconds : array-like, optional
        ``(N, 2)`` durations of the trials' utterances (for ``duration``).
    prior : float
        Effective prior of the objective (0.5, BOSARIS's default).

    Returns
    -------
    Calibration
        Without a threshold (see ``Calibration.with_operating_point``).

    Example
    -------
    >>> calibration = fit_calibration([0.1, 0.5, 0.3, 0.8], [0, 1, 0, 1])
    >>> calibration.weights["score"] > 0
    True
    """
    features, names = as_numpy(scores).astype(np.float64).reshape(-1, 1), []
    if quality:
        terms, names = quality_features(quality, seconds)
        features = np.hstack([features, terms])
    weights, offset = fit_linear_llrs(features, labels, prior)
    return Calibration(
        weights=dict(zip(["score", *names], map(float, weights))), offset=offset,
        quality=list(quality), prior=float(prior),
    )


def save_calibration(calibration, folder):
    """Writes ``calibration`` to ``folder/calibration.json`` atomically; returns the path."""
    path = os.path.join(folder, SCORE_CALIBRATION_FILE)
    content = {"format": FORMAT, "score": "cosine", **dataclasses.asdict(calibration)}
    return write_atomic(path, lambda out: out.write(json.dumps(content, indent=2) + "\n"))


# What a calibration.json holds: the keys Calibration has, and format and score.
KEYS = {"format", "score", *(field.name for field in dataclasses.fields(Calibration))}
# Largest magnitude of a stored number: an LLR of a million nats is certainty far beyond any
# development list, so a larger weight, offset or threshold is a broken file, not a fit.
MAX_MAGNITUDE = 1e6


def read_json(path):
    """The content of the JSON file ``path``; a ValueError naming it when it is not JSON text.

    Example
    -------
    >>> path = getfixture("tmp_path") / "c.json"
    >>> _ = path.write_bytes(b"\\x89PNG")
    >>> read_json(str(path))
    Traceback (most recent call last):
    ...
    ValueError: .../c.json: not readable JSON (not UTF-8 text: ...)
    """
    with open(path, encoding="utf-8") as file:
        try:
            return json.load(file)
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not readable JSON (not UTF-8 text: {error})") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not readable JSON ({error})") from None


def checked_number(value, name, low=-MAX_MAGNITUDE, high=MAX_MAGNITUDE):
    """``value`` as a float when it is a number in ``[low, high]`` (a boolean is not one).

    Example
    -------
    >>> checked_number(True, "threshold")
    Traceback (most recent call last):
    ...
    ValueError: threshold must be a finite number in [-1e+06, 1e+06], got True
    """
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not low <= value <= high):
        raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def checked_rate(value, name):
    """``value`` as a float when it is a number strictly between 0 and 1.

    Example
    -------
    >>> checked_rate(0.8, "coverage"), checked_rate(1, "prior")
    Traceback (most recent call last):
    ...
    ValueError: prior must be in (0, 1), got 1
    """
    if checked_number(value, name, 0.0, 1.0) in (0.0, 1.0):
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return float(value)


def _numbers(values, name, size=None):
    """A list of finite numbers (of ``size`` when given, else at least one), or None."""
    if values is None:
        return None
    if not isinstance(values, list) or not values or (size and len(values) != size):
        raise ValueError(f"{name} must be a list of {size or 'one or more'} numbers, "
                         f"got {values!r}")
    return [checked_number(value, f"{name}[{i}]") for i, value in enumerate(values)]


def _parsed(content):
    """The ``Calibration`` of a ``calibration.json``'s content; a ValueError says what is wrong."""
    unknown = sorted(set(content) - KEYS)
    missing = [key for key in ("weights", "offset", "threshold") if key not in content]
    if unknown or missing:
        raise ValueError("; ".join([f"missing {', '.join(missing)}"] * bool(missing) + [
            f"unknown keys {unknown} (known: {sorted(KEYS)})"] * bool(unknown)))
    if content.get("score", "cosine") != "cosine":
        raise ValueError(f"score {content['score']!r}: a dmha calibration maps 'cosine' scores")
    quality = content.get("quality", [])
    if (not isinstance(quality, list) or len(set(map(str, quality))) != len(quality)
            or not all(isinstance(name, str) and name in QUALITY_TERMS for name in quality)):
        raise ValueError(f"quality must be a list of distinct {sorted(QUALITY_TERMS)}, "
                         f"got {quality!r}")
    terms = ["score", *(term for name in quality for term in QUALITY_TERMS[name])]
    weights = content["weights"]
    if not isinstance(weights, dict) or sorted(weights) != sorted(terms):
        given = sorted(weights) if isinstance(weights, dict) else weights
        raise ValueError(f"weights must have exactly the keys {terms} (the score and the "
                         f"terms of quality {quality}), got {given!r}")
    point = content.get("operating_point")
    if point is not None and (not isinstance(point, dict) or len(point) != 1
                              or not set(point) <= {"target_far", "p_target"}):
        raise ValueError("operating_point must be {\"target_far\": x} or {\"p_target\": p}, "
                         f"got {point!r}")
    development = content.get("development", {})
    if not isinstance(development, dict):
        raise ValueError(f"development must be an object, got {development!r}")
    fingerprint = content.get("embedding_model_sha256")
    if fingerprint is not None and not (isinstance(fingerprint, str)
                                        and re.fullmatch("[0-9a-f]{64}", fingerprint)):
        raise ValueError(f"embedding_model_sha256 must be 64 hex digits, got {fingerprint!r}")
    stats = _numbers(content.get("score_stats"), "score_stats", size=2)
    if stats is not None and stats[1] <= 0:
        raise ValueError(f"score_stats must be [mean, sd] with sd > 0, got {stats}")
    return Calibration(
        weights={name: checked_number(weights[name], f"weights.{name}") for name in terms},
        offset=checked_number(content["offset"], "offset"), quality=quality,
        prior=checked_rate(content.get("prior", 0.5), "prior"),
        threshold=checked_number(content["threshold"], "threshold"),
        operating_point=point and {key: checked_rate(value, f"operating_point.{key}")
                                   for key, value in point.items()},
        development=development, centre=_numbers(content.get("centre"), "centre"),
        score_stats=stats, embedding_model_sha256=fingerprint,
    )


def _checked(content, path):
    """A ``calibration.json``'s content as a ``Calibration``; a ValueError naming ``path``.

    Every key is known and of its type (a boolean is not a number), every
    number finite and within ``MAX_MAGNITUDE``, the weights exactly those of
    the score and the quality terms.
    """
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ValueError(f"{path}: not a dmha calibration (expected \"format\": \"{FORMAT}\")")
    try:
        return _parsed(content)
    except ValueError as error:
        raise ValueError(f"{path}: not a valid calibration: {error}") from None


def embedding_model_sha256(folder):
    """The fingerprint of a model folder's embedding model: SHA-256 of its weights.

    Over the tensors of ``embedding_model.ckpt`` (read as tensors only, see
    :func:`dmha_modules.folders.safety.read_checkpoint`), in key order: each
    key, dtype, shape and bytes. It depends on the weights, not on how the
    file was written, so a re-exported folder of the same model keeps it.

    Arguments
    ---------
    folder : str
        A model folder.

    Returns
    -------
    str
        64 hex digits.

    Raises
    ------
    ModelFolderError
        The checkpoint is missing, unreadable or not a state dict; the message names it.
    """
    import torch  # only where a checkpoint is read

    from dmha_modules.folders.safety import ModelFolderError, read_checkpoint

    path = os.path.join(folder, "embedding_model.ckpt")
    if not os.path.isfile(path):
        raise ModelFolderError([f"{path}: no such file (a calibration names the embedding "
                                "model it was fitted on)"])
    state = read_checkpoint(path)
    if not isinstance(state, dict) or not all(
            isinstance(value, torch.Tensor) for value in state.values()):
        raise ModelFolderError([f"{path}: not a state dict of tensors"])
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(state[key].shape)}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_model(calibration, folder, path):
    """Refuses ``calibration`` (from ``path``) unless fitted on ``folder``'s embedding model."""
    if calibration.embedding_model_sha256 is None:
        logger.warning(
            "WARNING: %s does not record the model it was fitted on (written before dmha "
            "recorded it), so it cannot be checked against %s; if that model has changed "
            "since, its LLRs and decisions are wrong: run dmha calibrate again", path, folder)
        return
    found = embedding_model_sha256(folder)
    if found != calibration.embedding_model_sha256:
        raise ValueError(
            f"{path}: fitted on another embedding model (sha256 "
            f"{calibration.embedding_model_sha256[:12]}..., this folder's embedding_model.ckpt "
            f"is {found[:12]}...); its LLRs would be wrong: run dmha calibrate again")


def load_calibration(folder):
    """The ``Calibration`` stored in a model folder, or None when it has none.

    Arguments
    ---------
    folder : str
        A model folder.

    Returns
    -------
    Calibration or None

    Raises
    ------
    ValueError
        A ``calibration.json`` that is not valid, or that was fitted on
        another embedding model than the folder's (see
        :func:`embedding_model_sha256`); the message names it. One that
        does not record its model is loaded with a warning.

    Example
    -------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> load_calibration(folder) is None
    True
    >>> stored = Calibration({"score": 9.0}, -4.0, threshold=2.0, operating_point={"p_target": 0.1})
    >>> _ = save_calibration(stored, folder)
    >>> load_calibration(folder) == stored
    True
    """
    path = os.path.join(folder, SCORE_CALIBRATION_FILE)
    if not os.path.exists(path):
        return None
    calibration = _checked(read_json(path), path)
    _check_model(calibration, folder, path)
    return calibration
