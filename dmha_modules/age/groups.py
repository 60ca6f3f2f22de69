"""Age groups: the classes of the age models, as bins of years.

Data preparation labels utterances with them and the recipe maps ages to
them, so they live apart from both.

Example
-------
>>> age_group(25), age_group(25, age_bins=(18,), age_groups=("minor", "adult"))
('twenties', 'adult')
"""

import bisect

DEFAULT_AGE_BINS = (13, 20, 30)
DEFAULT_AGE_GROUPS = ("child", "teens", "twenties", "thirties+")
# Common Voice's own spelling, "fourties" included.
COMMONVOICE_AGE_GROUPS = (
    "teens",
    "twenties",
    "thirties",
    "fourties",
    "fifties",
    "sixties",
    "seventies",
    "eighties",
    "nineties",
)


def age_group(age, age_bins=DEFAULT_AGE_BINS, age_groups=DEFAULT_AGE_GROUPS):
    """Returns the name of the age group holding ``age``.

    Arguments
    ---------
    age : float
        Age in years.
    age_bins : sequence of float
        Increasing bin edges in years; an age equal to an edge belongs to
        the group above it.
    age_groups : sequence of str
        Group names, one more than the edges.

    Returns
    -------
    str

    Example
    -------
    >>> [age_group(age) for age in (6, 12.9, 13, 19.9, 20, 30, 43)]
    ['child', 'child', 'teens', 'teens', 'twenties', 'thirties+', 'thirties+']
    """
    return age_groups[bisect.bisect_right(age_bins, age)]


def check_age_bins(age_bins, age_groups):
    """Raises ValueError unless ``age_groups`` name the bins of ``age_bins``.

    Arguments
    ---------
    age_bins : sequence of float
        Bin edges in years; they must increase.
    age_groups : sequence of str
        Distinct group names, one more than the edges.

    Example
    -------
    >>> check_age_bins((18,), ("minor", "adult"))
    >>> check_age_bins((18,), ("adult",))
    Traceback (most recent call last):
    ValueError: 1 age bin edges need 2 group names, got 1: ['adult']
    """
    if len(age_groups) != len(age_bins) + 1:
        raise ValueError(
            f"{len(age_bins)} age bin edges need {len(age_bins) + 1} group names, "
            f"got {len(age_groups)}: {list(age_groups)}"
        )
    if any(low >= high for low, high in zip(age_bins, age_bins[1:])):
        raise ValueError(f"age bin edges must increase: {list(age_bins)}")
    if len(set(age_groups)) != len(age_groups):
        raise ValueError(f"age group names must differ: {list(age_groups)}")
