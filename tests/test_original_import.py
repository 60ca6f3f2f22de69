"""Model folders imported from the original code compute and decide as its own pipeline, on real speech.

Checkpoints are written by the original's classes (``test_original``'s
references) and imported with ``dmha import-original``; the folder is then
used the way a user would: SpeechBrain's own ``EncoderClassifier`` for the
embeddings, ``AgeClassifier`` and ``dmha age`` for the decisions. The
reference is the original's pipeline (``test_original_pipeline``): librosa
as its ``featureExtractor.mfsc``, its CMN / CMVN, one utterance at a time.

Cases: a CMVN checkpoint (VGG4L + DoubleMHA, ``model.py``), a ``resnet``
one (MHA, ``model.py``) and an ordinal one (VGG3L + Attention,
``model_sigmoid.py``), each imported at 16 kHz (speechocean762) and 8 kHz
(FSDD).
"""

import csv

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml
from speechbrain.inference.classifiers import EncoderClassifier

from dmha_modules.inference import AgeClassifier
from dmha_modules.original import OriginalFormatError, group_centres, import_original
from tests.cli.cli_helpers import run_cli
from tests.test_original import (
    AGE_GROUPS,
    original_outputs,
    random_original_model,
    save_original,
)
from tests.test_original_pipeline import (
    original_log_mel,
    original_normalize,
    small_age_settings,
    utterances,
)

CASES = [
    ("VGG4L", "DoubleMHA", "model.py", "cmvn"),
    ("resnet", "MHA", "model.py", "cmn"),
    ("VGG3L", "Attention", "model_sigmoid.py", "cmn"),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: faster for these small models on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", CASES, ids=["-".join(case) for case in CASES])
def test_imported_folder_computes_and_decides_as_the_original(shared_data, tmp_path, capsys, case):
    settings = small_age_settings(*case)
    sigmoid = case[2] == "model_sigmoid.py"
    reference = random_original_model(settings, sigmoid=sigmoid)
    checkpoint, config = save_original(reference, settings, tmp_path)
    for rate, waveforms in utterances(shared_data).items():
        folder = tmp_path / f"model_{rate}"
        status, _, err = run_cli(capsys, "import-original", "--checkpoint", checkpoint,
                                 "--config", config, "--out", folder, "--sample_rate", rate)
        assert status == 0, err
        encoder = EncoderClassifier.from_hparams(source=str(folder), savedir=str(folder))
        ages = AgeClassifier.from_hparams(source=str(folder), savedir=str(folder))
        expected, paths = [], []
        for index, waveform in enumerate(waveforms):
            features = original_normalize(original_log_mel(shared_data, rate, index), case[3])
            theirs, _, decision = original_outputs(reference, features, sigmoid)
            with torch.no_grad():
                ours = encoder.encode_batch(torch.from_numpy(waveform).float()[None])[0, 0]
            cosine = F.cosine_similarity(ours, theirs, dim=0).item()
            assert cosine >= 0.9999, (rate, index, cosine)
            expected.append(AGE_GROUPS[decision] if decision >= 0 else "")
            assert (ages.age_of_embedding(ours)["group"] or "") == expected[-1], (rate, index)
            paths.append(tmp_path / f"utt_{rate}_{index}.wav")
            sf.write(paths[-1], waveform, rate, subtype="FLOAT")

        out = tmp_path / f"ages_{rate}.csv"
        status, _, err = run_cli(capsys, "age", "--model", folder, "--out", out, *paths)
        assert status == 0, err
        with open(out, newline="", encoding="utf-8") as table:
            rows = list(csv.DictReader(table))
        assert [row["age_group"] for row in rows] == expected
        assert [name for name in rows[0] if name.startswith("p_")] == [
            f"p_{group}" for group in AGE_GROUPS
        ]


def test_group_names_and_ages_are_checked_against_the_model(tmp_path):
    settings = small_age_settings("VGG3L", "Attention", "model.py", "cmn")
    checkpoint, config = save_original(random_original_model(settings), settings, tmp_path)
    with pytest.raises(OriginalFormatError, match="6 classes, but 2 names"):
        import_original(checkpoint, config, tmp_path / "m", groups=["young", "old"])
    names = [f"g{i}" for i in range(6)]
    with pytest.raises(OriginalFormatError, match="give the years of each of the 6 groups"):
        import_original(checkpoint, config, tmp_path / "m", groups=names)
    assert not (tmp_path / "m").exists()
    folder, _ = import_original(checkpoint, config, tmp_path / "m", groups=names,
                                group_ages=[10, 20, 30, 40, 50, 60])
    text = (tmp_path / "m" / "hyperparams.yaml").read_text()
    assert "task: age" in text and "framing: original" in text
    settings = yaml.safe_load(text[text.index("group_posteriors:"):text.index("label_encoder:")])
    assert settings["group_centres"] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert settings["decision"] == "argmax"
    # The decade names' middles, written out: the years of the defaults.
    assert group_centres(AGE_GROUPS) == [25.0, 35.0, 45.0, 55.0, 65.0, 75.0]


def test_task_can_be_forced_to_speaker(tmp_path):
    settings = small_age_settings("VGG3L", "Attention", "model.py", "cmn")
    checkpoint, config = save_original(random_original_model(settings), settings, tmp_path)
    import_original(checkpoint, config, tmp_path / "m", task="speaker")
    text = (tmp_path / "m" / "hyperparams.yaml").read_text()
    assert "task: speaker" in text and "group_centres" not in text
