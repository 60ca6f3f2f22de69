"""Calibration: Cllr and minCllr against the published formulas, the fitted LLRs, thresholds.

The references are written here from the definitions: Cllr term by term
(Brümmer & du Preez 2006), the isotonic fit of minCllr by the max-min formula
of isotonic regression (Barlow et al. 1972) rather than by pooling, the
logistic-regression objective minimised by a derivative-free search, and
likelihood ratios of Gaussian scores from their densities.
"""

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import norm

from dmha_modules.scoring.calibration import (
    SCORE_CALIBRATION_FILE,
    Calibration,
    bayes_threshold,
    far_threshold,
    fit_calibration,
    load_calibration,
    quality_features,
    save_calibration,
)
from dmha_modules.scoring.cllr import cllr, min_cllr, pav_llrs
from dmha_modules.scoring.list_norm import scoring_centre
from dmha_modules.scoring.metrics import cosine_scores, trial_pairs


def softplus(x):
    """ln(1 + e^x), with the limits at the infinities."""
    if x == math.inf:
        return math.inf
    if x == -math.inf:
        return 0.0
    return x + math.log1p(math.exp(-x)) if x > 30 else math.log1p(math.exp(x))


def direct_cllr(llrs, labels):
    """Cllr = 1/(2 ln 2) [mean_tar ln(1 + e^-llr) + mean_non ln(1 + e^llr)]."""
    target = [softplus(-llr) for llr, label in zip(llrs, labels) if label]
    nontarget = [softplus(llr) for llr, label in zip(llrs, labels) if not label]
    return (sum(target) / len(target) + sum(nontarget) / len(nontarget)) / (2 * math.log(2))


def reference_pav_llrs(scores, labels):
    """Optimal LLRs: the isotonic posterior p_i = max_{j<=i} min_{k>=i} mean(labels of
    distinct scores j..k), minus the empirical prior log-odds."""
    distinct = sorted(set(scores))
    targets = [sum(label for s, label in zip(scores, labels) if s == d) for d in distinct]
    counts = [sum(1 for s in scores if s == d) for d in distinct]
    m = len(distinct)
    posterior = [
        max(min(sum(targets[j:k + 1]) / sum(counts[j:k + 1]) for k in range(i, m))
            for j in range(i + 1))
        for i in range(m)
    ]
    prior_log_odds = math.log(sum(labels) / (len(labels) - sum(labels)))

    def llr(p):
        if p in (0, 1):
            return math.inf if p else -math.inf
        return math.log(p / (1 - p)) - prior_log_odds

    by_score = {d: llr(p) for d, p in zip(distinct, posterior)}
    return [by_score[s] for s in scores]


def gaussian_trials(rng, n_target, n_nontarget, target=(0.6, 0.1), nontarget=(0.1, 0.1)):
    scores = np.concatenate([rng.normal(*target, n_target), rng.normal(*nontarget, n_nontarget)])
    return scores, np.repeat([1, 0], [n_target, n_nontarget])


# ---------------------------------------------------------------- Cllr and minCllr


def test_cllr_is_the_published_formula():
    rng = np.random.default_rng(1)
    llrs = rng.normal(0, 4, 300)
    labels = rng.integers(0, 2, 300)
    assert cllr(llrs, labels) == pytest.approx(direct_cllr(llrs, labels), rel=1e-12)
    # Uninformative LLRs cost 1 bit; large right-side ones almost nothing; wrong ones a lot.
    assert cllr(np.zeros(10), labels[:10]) == pytest.approx(1.0)
    assert cllr([800.0, -800.0], [1, 0]) == 0.0
    assert cllr([-800.0, 800.0], [1, 0]) == pytest.approx(800 / math.log(2))


def test_infinite_llrs_cost_nothing_on_the_right_side_and_everything_on_the_wrong():
    labels = [1, 1, 0, 0]
    assert cllr([math.inf, 1.0, -math.inf, -1.0], labels) == pytest.approx(
        direct_cllr([math.inf, 1.0, -math.inf, -1.0], labels))
    assert cllr([-math.inf, 1.0, 0.0, 0.0], labels) == math.inf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_cllr_is_the_cllr_of_the_isotonic_posterior(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(labels * 1.2, 1.0), 1)  # rounded: tied scores of both kinds
    assert len(set(scores)) < len(scores)
    expected = reference_pav_llrs(scores.tolist(), labels.tolist())
    np.testing.assert_allclose(pav_llrs(scores, labels), expected, rtol=1e-12, atol=1e-12)
    assert min_cllr(scores, labels) == pytest.approx(direct_cllr(expected, labels), rel=1e-12)


def test_pav_llrs_are_infinite_only_at_pure_ends_and_ties_share_one_llr():
    llrs = pav_llrs([0.0, 1.0, 2.0, 2.0, 3.0, 4.0], [0, 0, 1, 0, 1, 1])
    assert llrs[0] == llrs[1] == -math.inf and llrs[4] == llrs[5] == math.inf
    assert llrs[2] == llrs[3] == 0.0  # one target and one non-target at 2.0, prior 1:1
    assert np.isfinite(pav_llrs([0.0, 1.0, 2.0, 3.0], [1, 0, 1, 0])).all()  # no pure end


def test_min_cllr_is_below_every_monotone_map_and_ignores_them():
    rng = np.random.default_rng(3)
    scores, labels = gaussian_trials(rng, 100, 400, target=(0.4, 0.15))
    best = min_cllr(scores, labels)
    assert 0 < best < 1
    for a in (1.0, 5.0, 10.0, 20.0):
        for b in (-6.0, -3.0, 0.0, 2.0):
            assert cllr(a * scores + b, labels) >= best
    assert min_cllr(np.exp(3 * scores), labels) == pytest.approx(best, rel=1e-12)
    assert min_cllr(scores**3 - 7, labels) == pytest.approx(best, rel=1e-12)


# ---------------------------------------------------------------- the fitted map


def direct_objective(parameters, features, labels, prior):
    """The prior-weighted cross-entropy of llr = features @ w + b, written out."""
    llrs = features @ parameters[:-1] + parameters[-1]
    offset = math.log(prior / (1 - prior))
    target = [softplus(-(llr + offset)) for llr, label in zip(llrs, labels) if label]
    nontarget = [softplus(llr + offset) for llr, label in zip(llrs, labels) if not label]
    return prior * np.mean(target) + (1 - prior) * np.mean(nontarget)


@pytest.mark.parametrize("prior", [0.5, 0.1])
def test_fit_minimises_the_prior_weighted_cross_entropy(prior):
    rng = np.random.default_rng(4)
    n = 300
    labels = (rng.random(n) < 0.25).astype(int)
    seconds = rng.uniform(1.0, 8.0, (n, 2))
    # Longer trials separate better: the quality terms have something to learn.
    scores = rng.normal(0.1 + 0.3 * labels * np.log(seconds.min(axis=1)), 0.15)
    calibration = fit_calibration(scores, labels, quality=["duration"], seconds=seconds,
                                  prior=prior)
    features = np.column_stack([scores, np.log(seconds.min(1)), np.log(seconds.max(1))])
    reference = minimize(direct_objective, np.zeros(4), args=(features, labels, prior),
                         method="Nelder-Mead",
                         options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 40000,
                                  "maxfev": 40000})
    ours = np.array([calibration.weights[name] for name in
                     ("score", "log_shorter_seconds", "log_longer_seconds")]
                    + [calibration.offset])
    np.testing.assert_allclose(ours, reference.x, atol=2e-3, rtol=1e-3)
    assert direct_objective(ours, features, labels, prior) <= reference.fun + 1e-10
    np.testing.assert_allclose(calibration.llrs(scores, seconds),
                               features @ ours[:-1] + ours[-1], rtol=1e-12)


@pytest.mark.parametrize("prior", [0.5, 0.01])
def test_the_llr_is_the_likelihood_ratio_whatever_the_prior_and_trial_counts(prior):
    """Equal-variance Gaussian scores have llr = log N(s; m1, sd) - log N(s; m0, sd),
    linear in s. Neither the effective prior nor the 1:10 ratio of target to
    non-target trials may shift it (a fit that forgot to take logit(prior) off
    would be 4.6 off at prior 0.01)."""
    rng = np.random.default_rng(5)
    (m1, m0), sd = (0.5, 0.1), 0.12
    scores, labels = gaussian_trials(rng, 20000, 200000, (m1, sd), (m0, sd))
    calibration = fit_calibration(scores, labels, prior=prior)
    grid = np.linspace(0.1, 0.5, 5)
    truth = norm.logpdf(grid, m1, sd) - norm.logpdf(grid, m0, sd)
    np.testing.assert_allclose(calibration.llrs(grid), truth, atol=0.15)
    assert calibration.weights["score"] == pytest.approx((m1 - m0) / sd**2, rel=0.03)


def test_well_separated_scores_calibrate_to_within_0_01_of_min_cllr():
    rng = np.random.default_rng(6)
    scores, labels = gaussian_trials(rng, 1000, 10000)  # 5 standard deviations apart
    raw_loss = cllr(scores, labels) - min_cllr(scores, labels)
    assert raw_loss > 0.3  # cosine scores are not LLRs: there is something to calibrate
    llrs = fit_calibration(scores, labels).llrs(scores)
    assert cllr(llrs, labels) - min_cllr(scores, labels) < 0.01
    # And on fresh trials of the same kind.
    fresh_scores, fresh_labels = gaussian_trials(rng, 1000, 10000)
    fresh_llrs = fit_calibration(scores, labels).llrs(fresh_scores)
    assert cllr(fresh_llrs, fresh_labels) - min_cllr(fresh_scores, fresh_labels) < 0.01


def test_an_affine_change_of_the_scores_gives_the_same_llrs():
    rng = np.random.default_rng(7)
    scores, labels = gaussian_trials(rng, 200, 2000, target=(0.3, 0.15))
    llrs = fit_calibration(scores, labels).llrs(scores)
    moved = fit_calibration(1000 * scores - 50, labels)
    np.testing.assert_allclose(moved.llrs(1000 * scores - 50), llrs, atol=1e-6)


def test_duration_terms_are_symmetric_and_named():
    features, names = quality_features(["duration"], [[3.0, 1.5], [1.5, 3.0]])
    assert names == ["log_shorter_seconds", "log_longer_seconds"]
    np.testing.assert_allclose(features, np.log([[1.5, 3.0], [1.5, 3.0]]))
    with pytest.raises(ValueError, match="unknown quality measures \\['snr'\\]"):
        quality_features(["snr"], [[1.0, 1.0]])
    calibration = Calibration({"score": 1.0, "log_shorter_seconds": 1.0,
                               "log_longer_seconds": 1.0}, 0.0, quality=["duration"])
    with pytest.raises(ValueError, match="needs the trials' duration"):
        calibration.llrs([0.5])


# ---------------------------------------------------------------- thresholds


def test_far_threshold_accepts_the_target_share_of_development_non_targets():
    nontarget = np.random.default_rng(8).permutation(np.arange(1000.0))
    for far in (0.01, 0.05, 0.2):
        threshold = far_threshold(nontarget, far)
        assert (nontarget > threshold).mean() == pytest.approx(far)
    # Between two LLRs the threshold is interpolated linearly between them.
    assert far_threshold(nontarget, 0.0105) == pytest.approx(988.5)
    with pytest.raises(ValueError, match="needs at least 1000 non-target trials, got 999"):
        far_threshold(nontarget[:999], 0.001)


@pytest.mark.parametrize("p_target", [0.01, 0.05, 0.3])
def test_bayes_threshold_of_true_llrs_minimises_the_detection_cost(p_target):
    assert bayes_threshold(p_target) == pytest.approx(math.log((1 - p_target) / p_target))
    # With true LLRs, the cost at the Bayes threshold is the least over thresholds.
    rng = np.random.default_rng(9)
    scores, labels = gaussian_trials(rng, 100000, 100000, (1.0, 1.0), (0.0, 1.0))
    llrs = scores - 0.5  # log N(s; 1, 1) - log N(s; 0, 1)
    is_target = labels.astype(bool)

    def cost(threshold):
        return (p_target * (llrs[is_target] <= threshold).mean()
                + (1 - p_target) * (llrs[~is_target] > threshold).mean())

    candidates = np.linspace(-3, 6, 181)
    assert cost(bayes_threshold(p_target)) <= min(map(cost, candidates)) + 2e-3


def test_the_operating_point_sets_the_threshold():
    calibration = Calibration({"score": 1.0}, 0.0)
    at_far = calibration.with_operating_point(np.arange(100.0), target_far=0.05)
    assert at_far.threshold == 94.0 and at_far.operating_point == {"target_far": 0.05}
    assert at_far.point_name() == "target FAR 5%"
    bayes = calibration.with_operating_point(None, p_target=0.01)
    assert bayes.threshold == pytest.approx(math.log(99))
    assert bayes.point_name() == "Bayes, p_target 0.01"
    with pytest.raises(ValueError, match="one of target_far and p_target"):
        calibration.with_operating_point(np.arange(10.0))


# ---------------------------------------------------------------- calibration.json


def test_calibration_json_round_trip(tmp_path):
    stored = Calibration({"score": 12.5, "log_shorter_seconds": 0.3, "log_longer_seconds": -0.1},
                         -4.25, quality=["duration"], prior=0.5, threshold=2.2,
                         operating_point={"target_far": 0.01},
                         development={"trials": "dev.txt", "n_target": 10},
                         centre=[0.5, -1.25, 3.0], score_stats=[0.02, 0.18])
    assert load_calibration(tmp_path) is None
    path = save_calibration(stored, tmp_path)
    assert path == str(tmp_path / SCORE_CALIBRATION_FILE)
    content = json.loads((tmp_path / SCORE_CALIBRATION_FILE).read_text(encoding="utf-8"))
    assert content["format"] == "dmha-calibration/1" and content["score"] == "cosine"
    assert load_calibration(tmp_path) == stored


@pytest.mark.parametrize(
    "text, words",
    [
        ("{", "not readable JSON"),
        ('{"weights": {"score": 1}}', "not a dmha calibration"),
        ('{"format": "dmha-calibration/1", "offset": 0, "threshold": 1}',
         "not a valid calibration"),
        ('{"format": "dmha-calibration/1", "weights": {"score": 1}, "offset": 0, '
         '"threshold": 1, "quality": ["duration"]}', "weights must have exactly the keys ['score', "
         "'log_shorter_seconds', 'log_longer_seconds']"),
        ('{"format": "dmha-calibration/1", "weights": {"score": "1"}, "offset": 0, '
         '"threshold": 1}', "weights.score must be a finite number"),
        ('{"format": "dmha-calibration/1", "weights": {"score": 1}, "offset": 0, '
         '"threshold": null}', "threshold must be a finite number"),
        ('{"format": "dmha-calibration/1", "weights": {"score": 1}, "offset": 0, '
         '"threshold": 1, "centre": [0.5, NaN]}', "centre[1] must be a finite number"),
        ('{"format": "dmha-calibration/1", "weights": {"score": 1}, "offset": 0, '
         '"threshold": 1, "centre": "0.5"}', "centre must be a list of one or more numbers"),
        ('{"format": "dmha-calibration/1", "weights": {"score": 1}, "offset": 0, '
         '"threshold": 1, "score_stats": [0.1, 0]}', "score_stats must be [mean, sd] with sd > 0"),
        ('{"format": "dmha-calibration/1", "weights": {"score": 1}, "offset": 0, '
         '"threshold": 1, "score_stats": [0.1]}', "score_stats must be a list of 2 numbers"),
        ('{"format": "dmha-calibration/1", "weights": {"score": 1}, "offset": 0, '
         '"threshold": 1, "score_stats": [NaN, 0.2]}', "score_stats[0] must be a finite number"),
    ],
)
def test_a_bad_calibration_json_is_named(tmp_path, text, words):
    (tmp_path / SCORE_CALIBRATION_FILE).write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=str(tmp_path / SCORE_CALIBRATION_FILE)) as error:
        load_calibration(tmp_path)
    assert words in str(error.value)


# ---------------------------------------------------------------- centring


def speaker_embeddings(rng, speakers, offset, per_speaker=12, size=16):
    """Utterances of new speakers: a voice vector each plus noise, all shifted by ``offset``
    (what a corpus shares: language, channel)."""
    voices = rng.normal(size=(speakers, size))
    labels = np.repeat(np.arange(speakers), per_speaker)
    return voices[labels] + 0.7 * rng.normal(size=(len(labels), size)) + offset, labels


def false_accepts(calibration, embeddings, labels, centre):
    pairs = torch.tensor([(i, j) for i, j, _ in trial_pairs(labels.tolist())])
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    shifted = torch.from_numpy(embeddings) - (0 if centre is None else centre)
    llrs = calibration.llrs(cosine_scores(shifted, pairs).numpy())
    return float(np.mean(llrs[~same] > calibration.threshold))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_centred_cosines_keep_the_false_accept_rate_on_another_corpus(seed):
    """Calibrated on one corpus at a 5 % FAR, measured on new speakers of a corpus whose
    embeddings all share another offset: centred on each list's own mean the rate stays
    within a factor 2 of the target, plain cosines accept several times more impostors."""
    rng = np.random.default_rng(seed)
    size = 16
    development, dev_labels = speaker_embeddings(rng, 40, np.zeros(size), size=size)
    offset = np.full(size, 1.5)
    other, other_labels = speaker_embeddings(rng, 40, offset, size=size)
    rates = {}
    for centred in (False, True):
        dev = torch.from_numpy(development)
        dev_centre = dev.mean(dim=0) if centred else None
        pairs = torch.tensor([(i, j) for i, j, _ in trial_pairs(dev_labels.tolist())])
        same = dev_labels[pairs[:, 0]] == dev_labels[pairs[:, 1]]
        scores = cosine_scores(dev - (0 if dev_centre is None else dev_centre), pairs).numpy()
        fitted = fit_calibration(scores, same)
        if centred:
            fitted.centre = dev_centre.tolist()
        fitted = fitted.with_operating_point(fitted.llrs(scores)[~same], target_far=0.05)
        centre = scoring_centre(fitted, torch.from_numpy(other))[0] if centred else None
        rates[centred] = false_accepts(fitted, other, other_labels, centre)
    assert 0.025 <= rates[True] <= 0.1
    assert rates[False] > 4 * 0.05
