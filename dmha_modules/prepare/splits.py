"""Speaker-disjoint train / valid / test splits, stratified by age group.

Held-out splits get a share of the speakers (not of the utterances), drawn
in each age group in proportion, deterministically for a seed.

Example
-------
>>> from dmha_modules.prepare.utterances import Utterance
>>> rows = [Utterance(f"u{i}", "", ("x", i), spk_id=f"s{i % 5}") for i in range(10)]
>>> splits = hold_out(rows, {}, {"valid": 0.2}, seed=1)
>>> sorted((name, len({row.spk_id for row in split})) for name, split in splits.items())
[('train', 4), ('valid', 1)]
"""

import math
import random
from collections import Counter, defaultdict

SPLITS = ("train", "valid", "test")


def check_ratios(valid_ratio, test_ratio):
    """Raises ValueError unless the held-out shares leave speakers to train on."""
    if not (
        0 <= valid_ratio < 1 and 0 <= test_ratio < 1 and valid_ratio + test_ratio < 1
    ):
        raise ValueError(
            f"valid_ratio ({valid_ratio}) and test_ratio ({test_ratio}) must be in "
            "[0, 1) with a sum below 1"
        )


def _round_half_up(value):
    return math.floor(value + 0.5)


def _allocate(target, ratio, sizes, capacity, tie_order):
    """Splits ``target`` speakers over strata in proportion to ``ratio``.

    Largest-remainder allocation: each stratum gets the floor of its share,
    and the speakers left over go to the largest fractional parts (ties in
    ``tie_order``), never beyond a stratum's capacity.
    """
    quota = {
        group: min(math.floor(ratio * n), capacity[group]) for group, n in sizes.items()
    }
    by_remainder = sorted(
        sizes, key=lambda group: (-(ratio * sizes[group] % 1), tie_order[group])
    )
    left = target - sum(quota.values())
    for group in by_remainder:
        if left <= 0:
            break
        if quota[group] < capacity[group]:
            quota[group] += 1
            left -= 1
    return quota


def _quotas(sizes, ratios, tie_order):
    """Split name -> stratum -> speakers it takes.

    Each split gets round(ratio * speakers) speakers. They are allocated
    cumulatively (valid + test, then valid inside it), which keeps the
    rounding from favouring the same stratum in every held-out split.
    """
    total = sum(sizes.values())
    names = list(ratios)
    capacity, cumulative = sizes, {}
    for count in range(len(names), 0, -1):
        target = sum(_round_half_up(ratios[name] * total) for name in names[:count])
        share = sum(ratios[name] for name in names[:count])
        capacity = cumulative[count] = _allocate(
            target, share, sizes, capacity, tie_order
        )
    return {
        name: {
            stratum: taken - (cumulative[index][stratum] if index else 0)
            for stratum, taken in cumulative[index + 1].items()
        }
        for index, name in enumerate(names)
    }


def split_speakers(speaker_strata, ratios, seed):
    """Assigns speakers to splits, stratified and deterministic for a seed.

    Arguments
    ---------
    speaker_strata : dict
        Speaker ID -> stratum (age group, or "" when there are no ages).
    ratios : dict
        Held-out split name -> share of the speakers; the rest is "train".
    seed : int
        Seed of the shuffle.

    Returns
    -------
    dict
        Speaker ID -> split name.

    Example
    -------
    >>> strata = {f"s{i}": "child" if i < 6 else "teens" for i in range(10)}
    >>> split = split_speakers(strata, {"valid": 0.2, "test": 0.2}, seed=1)
    >>> sorted(Counter(split.values()).items())
    [('test', 2), ('train', 6), ('valid', 2)]
    """
    members = defaultdict(list)
    for speaker, stratum in speaker_strata.items():
        members[stratum].append(speaker)
    sizes = {stratum: len(speakers) for stratum, speakers in members.items()}
    rng = random.Random(seed)
    tie_order = sorted(sizes)
    rng.shuffle(tie_order)
    tie_order = {stratum: index for index, stratum in enumerate(tie_order)}
    quotas = _quotas(sizes, ratios, tie_order)
    assignment = {}
    for stratum in sorted(members):
        speakers = sorted(members[stratum])
        rng.shuffle(speakers)
        for split, quota in quotas.items():
            for speaker in speakers[: quota[stratum]]:
                assignment[speaker] = split
            speakers = speakers[quota[stratum] :]
        for speaker in speakers:
            assignment[speaker] = "train"
    return assignment


def _speaker_strata(rows):
    """Speaker -> most frequent age group of its utterances ("" without ages)."""
    groups = defaultdict(Counter)
    for row in rows:
        groups[row.spk_id][row.age_group or ""] += 1
    return {
        speaker: min(counts, key=lambda group: (-counts[group], group))
        for speaker, counts in groups.items()
    }


def hold_out(rows, held_out, ratios, seed):
    """Splits ``rows`` (not yet in a split) by speaker into train and ``ratios``.

    Arguments
    ---------
    rows : list of Utterance
        The rows to split.
    held_out : dict
        Split name -> rows already in that split (e.g. a corpus' own test
        split); the result adds the new splits to it.
    ratios : dict
        Held-out split name -> share of the speakers of ``rows``.
    seed : int
        Seed of the split.

    Returns
    -------
    dict
        Split name -> rows.
    """
    assignment = split_speakers(_speaker_strata(rows), ratios, seed)
    splits = {name: list(split_rows) for name, split_rows in held_out.items()}
    for row in rows:
        splits.setdefault(assignment[row.spk_id], []).append(row)
    return splits


def check_disjoint(splits, log):
    """Stops the run when a speaker appears in more than one split.

    Reported once per speaker, at its first row in the later split.
    """
    first_split, reported = {}, set()
    for name in SPLITS:
        for row in splits.get(name, ()):
            if not row.spk_id or row.spk_id in reported:
                continue
            seen = first_split.setdefault(row.spk_id, name)
            if seen != name:
                reported.add(row.spk_id)
                log.stop(
                    *row.origin,
                    f"speaker {row.spk_id!r} is in both the {seen} and the {name} "
                    "split; splits must be speaker-disjoint",
                )
