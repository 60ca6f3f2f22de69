"""What a careful user tries on ``dmha embed``: unwritable outputs, odd lists, all files bad.

Each command's own cases are in the red-team module (``test_cli_red_team.py``).
"""

import numpy as np
import soundfile
from tests.cli.cli_helpers import read_only_folder, run_cli
from tests.test_inference import voice, write_bad_files

from dmha_modules import inference


def test_an_output_that_cannot_be_written_is_refused_before_any_work(
    models, audio, tmp_path, capsys, monkeypatch
):
    embedded = []
    monkeypatch.setattr(inference, "embed_files", lambda *a, **k: embedded.append(a) or [])
    with read_only_folder(tmp_path / "read_only") as folder:
        out = folder / "emb.npz"
        status, _, stderr = run_cli(capsys, "embed", "--model", models["speaker"], "--folder",
                                    audio, "--out", out, "--no_progress")
    assert status == 1 and not embedded
    assert stderr.startswith(f"dmha: {out}: cannot be written in {folder} (")
    in_the_way = tmp_path / "file"
    in_the_way.write_text("x")
    status, _, stderr = run_cli(capsys, "embed", "--model", models["speaker"], "--folder",
                                audio, "--out", in_the_way / "emb.npz", "--no_progress")
    assert status == 1 and not embedded
    assert stderr == f"dmha: {in_the_way / 'emb.npz'}: the folder {in_the_way} does not exist\n"


def test_a_list_with_a_bom_and_paths_with_spaces(models, tmp_path, capsys):
    """Kaldi's wav.scp convention: the first field is the id, the rest of the line the path."""
    spaced = tmp_path / "my recordings"
    spaced.mkdir()
    for path in (spaced / "first take.wav", tmp_path / "b.wav"):
        soundfile.write(path, voice(0.6, 16000, 150), 16000)
    listing = tmp_path / "wav.scp"
    listing.write_text(f"\ufeffutt1 {spaced / 'first take.wav'}\n{tmp_path / 'b.wav'}\n",
                       encoding="utf-8")
    out = tmp_path / "emb.npz"
    status, _, stderr = run_cli(capsys, "embed", "--model", models["speaker"], "--list",
                                listing, "--out", out, "--no_progress")
    assert status == 0, stderr
    assert sorted(np.load(out).files) == sorted(["utt1", str(tmp_path / "b")])


def test_when_every_file_fails_the_old_output_is_kept(models, tmp_path, capsys):
    bad = write_bad_files(tmp_path / "bad")
    out = tmp_path / "emb.npz"
    np.savez(out, old=np.ones(3, np.float32))
    status, stdout, stderr = run_cli(capsys, "embed", "--model", models["speaker"], "--out",
                                     out, "--no_progress", *bad)
    assert status == 1
    lines = stderr.splitlines()
    assert len(lines) == len(bad) + 1 and all(line.startswith("dmha: skipped ")
                                              for line in lines[:-1])
    assert lines[-1] == (f"dmha: {out}: not written: no input could be used "
                         f"(an existing {out} is left as it was)")
    assert np.load(out).files == ["old"]
