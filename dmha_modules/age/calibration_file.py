"""``age_calibration.json``: an age experiment's calibration, read strictly.

``recipes/train.py`` writes what it calibrated on the validation speakers
(:func:`dmha_modules.age.uncertainty.calibrate_age`) into the experiment's
output folder; ``dmha export --experiment`` puts it into the model folder's
``hyperparams.yaml``, where every ``dmha age`` reads it. So it is checked as
``calibration.json`` is (:mod:`dmha_modules.scoring.calibration`): a JSON
object of known keys only, each of its type (a boolean is not a number),
every number finite and in its range; anything else is one line naming the
file and what is wrong.
"""

from dmha_modules.scoring.calibration import (
    MAX_MAGNITUDE,
    checked_number,
    checked_rate,
    read_json,
)

AGE_CALIBRATION_FILE = "age_calibration.json"
# The interval's keys: all of them or none (a model without years has no interval).
INTERVAL_KEYS = ("interval_coverage", "interval_half_width_years",
                 "utterance_interval_half_width_years")
KEYS = ("calibration_speakers", "temperature", *INTERVAL_KEYS)


def _speakers(value):
    """The number of calibration speakers: an integer of at least one."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"calibration_speakers must be a whole number of at least 1, "
                         f"got {value!r}")
    return value


def _half_width(value, name):
    """A half-width in years: a finite number >= 0, or None (too few speakers for one)."""
    return None if value is None else checked_number(value, name, 0.0, MAX_MAGNITUDE)


def _parsed(content):
    """The checked calibration of a JSON value; a ValueError says what is wrong."""
    if not isinstance(content, dict):
        raise ValueError(f"expected a JSON object of {list(KEYS)}, got {type(content).__name__}")
    unknown = sorted(set(content) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown keys {unknown} (known: {list(KEYS)})")
    given = [key for key in INTERVAL_KEYS if key in content]
    missing = [key for key in ("calibration_speakers",) if key not in content] + (
        [key for key in INTERVAL_KEYS if key not in content] if given else [])
    if missing:
        raise ValueError(f"missing {', '.join(missing)}"
                         + (" (the interval's keys come together)" * bool(given)))
    calibration = {"calibration_speakers": _speakers(content["calibration_speakers"])}
    if "temperature" in content:
        temperature = checked_number(content["temperature"], "temperature", 0.0, MAX_MAGNITUDE)
        if temperature == 0:
            raise ValueError("temperature must be above 0, got 0")
        calibration["temperature"] = temperature
    if given:
        calibration["interval_coverage"] = checked_rate(content["interval_coverage"],
                                                        "interval_coverage")
        for key in INTERVAL_KEYS[1:]:
            calibration[key] = _half_width(content[key], key)
    return calibration


def load_age_calibration(path):
    """The calibration an ``age_calibration.json`` holds, checked (see the module docstring).

    Arguments
    ---------
    path : str
        The file.

    Returns
    -------
    dict
        ``calibration_speakers``, and ``temperature`` and the interval's
        keys where the file has them, as floats (half-widths may be None).

    Raises
    ------
    ValueError
        One line naming ``path`` and what is wrong with it.

    Example
    -------
    >>> import json
    >>> path = getfixture("tmp_path") / AGE_CALIBRATION_FILE
    >>> _ = path.write_text(json.dumps({"calibration_speakers": 13, "temperature": 1.4}))
    >>> load_age_calibration(str(path))
    {'calibration_speakers': 13, 'temperature': 1.4}
    >>> _ = path.write_text(json.dumps({"calibration_speakers": 13, "temperature": True}))
    >>> load_age_calibration(str(path))
    Traceback (most recent call last):
    ...
    ValueError: .../age_calibration.json: not a valid age calibration: temperature must be a finite number in [0, 1e+06], got True
    """
    try:
        return _parsed(read_json(path))
    except ValueError as error:
        if str(error).startswith(f"{path}: "):  # read_json's: names the file already
            raise
        raise ValueError(f"{path}: not a valid age calibration: {error}") from None
