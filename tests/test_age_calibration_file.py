"""``age_calibration.json`` is read as strictly as ``calibration.json`` (issue 26, beside item 10).

``dmha export --experiment`` copies an age experiment's calibration into the
model folder (``saved_calibration``); a file with a wrong key, a wrong type or
a non-finite number is refused on one line naming it, never copied.
"""

import json

import pytest

from dmha_modules.folders.model_folder import saved_calibration

# As recipes/train.py writes it (calibrate_age): a years model with too few speakers for
# the utterance interval.
GOOD = {"calibration_speakers": 13, "temperature": 1.37, "interval_coverage": 0.8,
        "interval_half_width_years": 6.2, "utterance_interval_half_width_years": None}


def with_(**changes):
    """``GOOD`` with ``changes`` (a value of ``...`` removes the key), as JSON text."""
    content = {**GOOD, **changes}
    return json.dumps({key: value for key, value in content.items() if value is not ...})


def write(tmp_path, text):
    path = tmp_path / "age_calibration.json"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_a_good_age_calibration_is_read(tmp_path):
    write(tmp_path, json.dumps(GOOD))
    assert saved_calibration({"output_folder": str(tmp_path)}) == GOOD
    # A model without years: the speakers and the temperature only.
    write(tmp_path, json.dumps({"calibration_speakers": 2, "temperature": 0.5}))
    assert saved_calibration({"output_folder": str(tmp_path)}) == {
        "calibration_speakers": 2, "temperature": 0.5}


@pytest.mark.parametrize("text, words", [
    ("{", "not readable JSON (Expecting property name"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not readable JSON (not UTF-8 text"),
    ("[13, 1.37]", "expected a JSON object"),
    (with_(temprature=1.2), "unknown keys ['temprature']"),
    (with_(calibration_speakers=...), "missing calibration_speakers"),
    (with_(calibration_speakers=True), "calibration_speakers must be a whole number"),
    (with_(calibration_speakers=2.5), "calibration_speakers must be a whole number"),
    (with_(calibration_speakers=0), "calibration_speakers must be a whole number of at least 1"),
    (with_(temperature="1.37"), "temperature must be a finite number in [0, 1e+06], got '1.37'"),
    (with_(temperature=True), "temperature must be a finite number in [0, 1e+06], got True"),
    (with_(temperature=float("nan")), "temperature must be a finite number"),
    (with_(temperature=-1.0), "temperature must be a finite number in [0, 1e+06], got -1.0"),
    (with_(temperature=0), "temperature must be above 0"),
    (with_(temperature=1e308), "temperature must be a finite number in [0, 1e+06], got 1e+308"),
    (with_(interval_coverage=1.5), "interval_coverage must be a finite number in [0, 1]"),
    (with_(interval_coverage=1), "interval_coverage must be in (0, 1)"),
    (with_(interval_coverage=None), "interval_coverage must be a finite number"),
    (with_(interval_coverage=...), "missing interval_coverage (the interval's keys come together)"),
    (with_(utterance_interval_half_width_years=...),
     "missing utterance_interval_half_width_years"),
    (with_(interval_half_width_years=-2.0), "interval_half_width_years must be a finite number "
                                            "in [0, 1e+06], got -2.0"),
    (with_(interval_half_width_years=float("inf")), "interval_half_width_years must be a finite"),
    (with_(utterance_interval_half_width_years="7"),
     "utterance_interval_half_width_years must be a finite number in [0, 1e+06], got '7'"),
])
def test_a_bad_age_calibration_is_refused_on_one_line_naming_the_file(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as raised:
        saved_calibration({"output_folder": str(tmp_path)})
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert words in message
