"""List normalisation: a trial list's cosines as a calibration maps them.

- ``scoring_centre``: the mean embedding a trial list's cosines are taken
  around. Subtracting the mean embedding of the files being scored removes
  what all of them share (language, channel, recording set-up), which raises
  every cosine of a corpus unlike the development one: impostor scores then
  land nearer the development ones, and the stored threshold keeps more of
  its false-accept rate across corpora (README, "Calibrated scores").
- ``scoring_stats``: the mean and standard deviation of the cosines between
  all pairs of a list's files, to standardise its scores by. In a list of
  many speakers nearly all pairs are different speakers, so these follow the
  impostor scores of the corpus being scored, whose spread centring leaves.
  (A list of few speakers has more same-speaker pairs: a higher mean and
  spread, so its impostor scores come out lower, the safe side.)

Lists of fewer than ``MIN_FILES_TO_CENTRE`` files (``dmha verify``'s two)
use the development list's statistics, stored in the ``Calibration``.
"""

import numpy as np
import torch

from dmha_modules.scoring.metrics import cosine_scores

# A trial list of fewer files is centred on (and standardised by) the development
# list's statistics instead of its own: those of a few embeddings are mostly
# those speakers' voices.
MIN_FILES_TO_CENTRE = 20
# Cosine statistics of a larger list come from the pairs of a seeded random
# subset of this many files (2 M pairs).
MAX_FILES_FOR_STATS = 2000


def embedded_rows(embeddings):
    """The rows of ``(N, E)`` embeddings of files that embedded: NaN rows (failed files) left out.

    Example
    -------
    >>> embedded_rows(torch.tensor([[1.0, 2.0], [float("nan"), 0.0]])).tolist()
    [[1.0, 2.0]]
    """
    return embeddings[~embeddings.isnan().any(dim=1)]


def scoring_centre(calibration, embeddings):
    """The mean embedding to subtract before scoring a trial list's files, and why that one.

    Arguments
    ---------
    calibration : Calibration
        Its ``centre`` set (a calibration of centred cosines).
    embeddings : torch.Tensor
        ``(N, E)`` embeddings of the list's distinct files; NaN rows (files
        that failed) are left out.

    Returns
    -------
    centre : torch.Tensor
        ``(E,)``: the files' own mean when there are ``MIN_FILES_TO_CENTRE``
        or more, else the stored development mean.
    source : str
        Which, in words, for the output.

    Example
    -------
    >>> from dmha_modules.scoring.calibration import Calibration
    >>> calibration = Calibration({"score": 9.0}, -4.0, centre=[1.0, 0.0])
    >>> centre, source = scoring_centre(calibration, torch.ones(2, 2))
    >>> centre.tolist(), source
    ([1.0, 0.0], "the development list's mean (fewer than 20 files to centre on)")
    """
    stored = torch.tensor(calibration.centre, dtype=embeddings.dtype)
    if stored.shape != embeddings.shape[1:]:
        raise ValueError(f"the calibration's centre has {len(stored)} values, the model's "
                         f"embeddings {embeddings.shape[1]}: calibrated with another model")
    files = len(embedded_rows(embeddings))
    if files < MIN_FILES_TO_CENTRE:
        return stored, (f"the development list's mean (fewer than {MIN_FILES_TO_CENTRE} "
                        "files to centre on)")
    return embeddings.nanmean(dim=0), f"the mean of these {files} files"


def pairwise_cosine_stats(embeddings):
    """Mean and standard deviation of the cosines between all pairs of embeddings.

    Arguments
    ---------
    embeddings : torch.Tensor
        ``(N, E)``; NaN rows (files that failed) are left out, and of more than
        ``MAX_FILES_FOR_STATS`` rows a seeded random subset of that many is used.

    Returns
    -------
    list of float
        ``[mean, sd]`` (the population standard deviation).

    Raises
    ------
    ValueError
        Fewer than 3 files, or cosines that do not vary.

    Example
    -------
    >>> stats = pairwise_cosine_stats(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    >>> [round(value, 4) for value in stats]  # cosines 0, 0.7071, 0.7071
    [0.4714, 0.3333]
    """
    rows = embedded_rows(embeddings).double()
    if len(rows) > MAX_FILES_FOR_STATS:
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
        rows = rows[order[:MAX_FILES_FOR_STATS]]
    if len(rows) < 3:
        raise ValueError(f"standardising needs the cosines of at least 3 files, got {len(rows)}")
    unit = torch.nn.functional.normalize(rows, dim=1)
    first, second = torch.triu_indices(len(unit), len(unit), offset=1)
    cosines = (unit @ unit.T)[first, second]
    mean, sd = float(cosines.mean()), float(cosines.std(correction=0))
    if not sd > 0:
        raise ValueError("the cosines between the files do not vary: nothing to standardise by")
    return [mean, sd]


def scoring_stats(calibration, embeddings):
    """The cosine statistics to standardise a trial list's scores by, and why those.

    Arguments
    ---------
    calibration : Calibration
        Its ``score_stats`` set (a calibration of standardised cosines).
    embeddings : torch.Tensor
        ``(N, E)`` embeddings of the list's distinct files as they are scored
        (centred, when the calibration centres); NaN rows are left out.

    Returns
    -------
    stats : list of float
        ``[mean, sd]``: ``pairwise_cosine_stats`` of the files when there are
        ``MIN_FILES_TO_CENTRE`` or more, else the development list's.
    source : str
        Which, in words, for the output.

    Example
    -------
    >>> from dmha_modules.scoring.calibration import Calibration
    >>> calibration = Calibration({"score": 2.0}, -4.0, score_stats=[0.1, 0.2])
    >>> scoring_stats(calibration, torch.eye(3))
    ([0.1, 0.2], "the development list's cosine statistics (fewer than 20 files)")
    """
    files = len(embedded_rows(embeddings))
    if files < MIN_FILES_TO_CENTRE:
        return list(calibration.score_stats), (
            f"the development list's cosine statistics (fewer than {MIN_FILES_TO_CENTRE} files)")
    source = f"the cosines between all pairs of these {files} files"
    return pairwise_cosine_stats(embeddings), source


def normalised_cosines(calibration, embeddings, pairs):
    """The cosines of ``pairs`` of ``embeddings`` as ``calibration`` takes them.

    Around a centre when it was fitted on centred embeddings (``scoring_centre``),
    standardised when on standardised cosines (``scoring_stats``).

    Arguments
    ---------
    calibration : Calibration
        Its ``centre`` and ``score_stats`` say which steps to take.
    embeddings : torch.Tensor
        ``(N, E)`` embeddings of the list's distinct files (NaN rows: files that failed).
    pairs : torch.Tensor
        ``(P, 2)`` row indices into ``embeddings``.

    Returns
    -------
    scores : numpy.ndarray
        ``(P,)`` float64.
    steps : list of str
        A line per step taken, saying which statistics were used.

    Raises
    ------
    ValueError
        The statistics cannot be taken (e.g. the cosines do not vary).

    Example
    -------
    >>> from dmha_modules.scoring.calibration import Calibration
    >>> calibration = Calibration({"score": 1.0}, 0.0, centre=[2.0, 0.0])
    >>> scores, steps = normalised_cosines(calibration, torch.tensor([[2.0, 1.0], [2.0, -1.0]]),
    ...                                    torch.tensor([[0, 1]]))
    >>> scores.round(6).tolist(), steps
    ([-1.0], ["cosines of embeddings centred on the development list's mean (fewer than 20 files to centre on)"])
    """
    steps = []
    if calibration.centre is not None:
        centre, source = scoring_centre(calibration, embeddings)
        embeddings = embeddings - centre
        steps.append(f"cosines of embeddings centred on {source}")
    scores = cosine_scores(embeddings, pairs).numpy().astype(np.float64)
    if calibration.score_stats is not None:
        (mean, sd), source = scoring_stats(calibration, embeddings)
        scores = (scores - mean) / sd
        steps.append(f"cosines standardised by {source}")
    return scores, steps
