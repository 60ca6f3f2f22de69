"""Fixtures of the data-preparation tests."""

import pytest
from tests.prepare.prepare_helpers import write_audio, write_text


@pytest.fixture
def labels_corpus(tmp_path):
    """Three speakers' audio (WAV and FLAC), labels and trial files."""
    data = tmp_path / "data"
    durations = {}
    for speaker in range(3):
        for utt in range(3):
            suffix = ".flac" if utt == 2 else ".wav"
            rel = f"spk{speaker}/utt{utt}{suffix}"
            durations[rel] = write_audio(data / rel, 0.1 + 0.01 * utt + 0.1 * speaker)
    write_text(
        data / "train.lst",
        # The original's format: extension optional, third column -1.
        "spk0/utt0 0 -1\nspk0/utt1 0 -1\nspk1/utt0 1 -1\n\n"
        "spk1/utt2 1 -1\nspk2/utt0.wav 2 -1\n",
    )
    write_text(data / "valid.lst", "spk0/utt2 0 -1\nspk2/utt1 2 -1\n")
    write_text(data / "clients.lst", "spk2/utt1 spk2/utt2\n")
    write_text(data / "impostors.lst", "spk0/utt2 spk2/utt2\nspk1/utt1 spk2/utt1\n")
    return data, durations
