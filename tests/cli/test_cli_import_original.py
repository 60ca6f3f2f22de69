"""``dmha import-original`` (old name ``import-seed``): the folder reproduces the original."""

import socket

import pytest
import torch
import torch.nn.functional as F
from tests.cli.cli_helpers import run_cli
from speechbrain.inference.classifiers import EncoderClassifier
from tests.test_inference import voice

from dmha_modules.nn.features import LogMelFeatures


@pytest.mark.slow
@pytest.mark.parametrize("command", ["import-original", "import-seed"])
def test_import_original_end_to_end(tmp_path, capsys, monkeypatch, command):
    from tests.test_original import cmn, random_original_model, save_original, original_settings

    settings = original_settings("VGG4L", "DoubleMHA")
    original_model = random_original_model(settings)
    checkpoint, config = save_original(original_model, settings, tmp_path)
    folder = tmp_path / "imported"
    status, stdout, _ = run_cli(capsys, command, "--checkpoint", checkpoint, "--config",
                                config, "--out", folder)
    assert status == 0
    assert f"{folder}: written; reloads strictly" in stdout

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    loaded = EncoderClassifier.from_hparams(source=str(folder), savedir=str(tmp_path / "sb"))
    monkeypatch.undo()
    assert len(loaded.hparams.label_encoder) == settings.num_spkrs

    original_embeddings = []
    for f0, seconds in [(110, 2.0), (230, 1.6)]:
        wav = torch.from_numpy(voice(seconds, 16000, f0, seed=f0))[None]
        with torch.no_grad():
            ours = loaded.encode_batch(wav)[:, 0]
            feats = cmn(LogMelFeatures(sample_rate=16000, n_mels=80, framing="original")(wav))
            theirs = original_model.getEmbedding(feats)
            original_cosines, _ = original_model(feats, torch.tensor([0]))
            our_cosines = loaded.mods.classifier(ours)[:, 0]
        assert F.cosine_similarity(ours, theirs).item() >= 0.9999
        torch.testing.assert_close(our_cosines, original_cosines, rtol=0, atol=1e-4)
        original_embeddings.append(theirs)
    assert F.cosine_similarity(*original_embeddings).item() < 0.99
