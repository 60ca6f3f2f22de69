"""The paper's recipe (``hparams/voxceleb_dmha_paper.yaml``) end to end on a VoxCeleb-shaped tree.

The tree is made here from real speech (speechocean762 speakers of
``$DMHA_DATA``), in the layouts VoxCeleb is distributed in: VoxCeleb2 dev
as AAC (``vox2/dev/aac/id*/VIDEO/NNNNN.m4a``) for training, VoxCeleb1 test as
WAV (``vox1/test/wav/id*/VIDEO/NNNNN.wav``) with a trial list in the official
``veri_test2.txt`` format. Each step is one command, as a user runs it:
the recipe (which prepares, trains a few batches of a small model and tests
on the trial list), then ``dmha score`` of the trial list with cosine and
AS-norm scoring, checked against scores computed here from ``dmha embed``'s
embeddings.
"""

import itertools
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from tests.audio_helpers import write_m4a
from tests.conftest import shared_data_dir
from tests.recipe_helpers import (
    REPO,
    TINY,
    assert_encoder_classifier_loads_offline,
    run_recipe,
    scored_trials,
)

pytestmark = pytest.mark.slow

TRAIN_SPEAKERS = 12  # VoxCeleb2 dev: 2 videos x 2 utterances each
TEST_SPEAKERS = 4  # VoxCeleb1 test: 3 utterances each, over 2 videos
TOP_N = 10


def speechocean_speakers(data, count, per_speaker):
    """``count`` speakers of speechocean762 with their first ``per_speaker`` FLAC paths."""
    root = data / "speechocean762"
    if not (root / "train" / "spk2utt").is_file():
        pytest.skip(f"speechocean762 not found under {data} (set DMHA_DATA)")
    paths = dict(line.split(maxsplit=1) for line in
                 (root / "train" / "wav.scp").read_text().splitlines())
    speakers = []
    for line in (root / "train" / "spk2utt").read_text().splitlines()[:count]:
        utterances = line.split()[1:1 + per_speaker]
        speakers.append([root / paths[utt].strip() for utt in utterances])
    return speakers


def voxceleb_tree(root, data):
    """Writes the tree and ``veri_test2.txt``; returns what the tests compare with."""
    speakers = speechocean_speakers(data, TRAIN_SPEAKERS + TEST_SPEAKERS, 4)
    durations, test_files = {}, []
    for number, flacs in enumerate(speakers[:TRAIN_SPEAKERS]):
        for index, flac in enumerate(flacs):
            audio, rate = sf.read(flac, dtype="float32")
            rel = f"id{number + 1:05d}/vid{index // 2}/{index % 2 + 1:05d}.m4a"
            path = root / "vox2" / "dev" / "aac" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            write_m4a(path, audio, rate)
            durations[rel.removesuffix(".m4a").replace("/", "--")] = len(audio) / rate
    for number, flacs in enumerate(speakers[TRAIN_SPEAKERS:]):
        for index, flac in enumerate(flacs[:3]):
            audio, rate = sf.read(flac, dtype="float32")
            rel = f"id{10270 + number}/vid{index % 2}/{index + 1:05d}.wav"
            path = root / "vox1" / "test" / "wav" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio, rate)
            test_files.append(rel)
    pairs = list(itertools.combinations(test_files, 2))
    trials = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}" for a, b in pairs]
    (root / "veri_test2.txt").write_text("\n".join(trials) + "\n")
    return {"root": root, "durations": durations, "pairs": pairs,
            "labels": [int(line[0]) for line in trials]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tree and the paper recipe's run on it: one command, 1 epoch of a small model."""
    data = shared_data_dir()
    if not data.is_dir():
        pytest.skip(f"real speech not found at {data} (set DMHA_DATA)")
    tree = voxceleb_tree(tmp_path_factory.mktemp("voxceleb"), data)
    output = tmp_path_factory.mktemp("paper") / "run"
    # The paper's YAML as it is (its default trial list: <data_folder>/veri_test2.txt),
    # with the small sizes of the other recipe tests and the original's VGG model.
    command = [sys.executable, str(REPO / "recipes" / "train.py"),
               str(REPO / "hparams" / "voxceleb_dmha_paper.yaml"),
               f"--data_folder={tree['root']}", f"--output_folder={output}",
               "--number_of_epochs=1", *TINY]
    result = run_recipe(command)
    return {**tree, "output": output, "log": result.stdout + result.stderr}


def vox_id(path):
    """The manifest ID of a VoxCeleb path: speaker--video--utterance."""
    return re.sub(r"\.(wav|m4a)$", "", path).replace("/", "--")


def test_the_paper_recipe_trains_on_m4a_and_tests_on_the_trial_list(trained, tmp_path):
    output = trained["output"]
    # Trained on VoxCeleb2's .m4a files, with their real durations (the source audio's).
    with open(output / "manifests" / "train.csv") as table:
        header, *rows = [line.rstrip("\n").split(",") for line in table]
    columns = {name: header.index(name) for name in ("ID", "duration", "wav", "spk_id")}
    assert rows and all(row[columns["wav"]].endswith(".m4a") for row in rows)
    for row in rows:
        expected = trained["durations"][row[columns["ID"]]]
        assert float(row[columns["duration"]]) == pytest.approx(expected, abs=1e-3)
    # 3 of the 12 dev speakers held out for validation (--valid_ratio 0.25), none of the test's.
    speakers = {row[columns["spk_id"]] for row in rows}
    assert len(speakers) == 9 and all(speaker < "id10000" for speaker in speakers)
    # Tested on exactly the trial list's trials, each scored once.
    metrics = json.loads((output / "test_metrics.json").read_text())
    assert metrics["trial_list"] == [str(trained["root"] / "veri_test2.txt")]
    assert metrics["trials"] == len(trained["pairs"]) == 66
    assert 0 <= metrics["eer"] <= 0.5
    lines = (output / "test_scores.txt").read_text().splitlines()
    assert len(lines) == 66
    assert scored_trials(output) == {(vox_id(a), vox_id(b)) for a, b in trained["pairs"]}
    assert_encoder_classifier_loads_offline(output / "model", tmp_path, speakers)


def dmha(*args):
    """Runs ``dmha``; asserts exit status 0; returns its stdout."""
    result = subprocess.run([sys.executable, "-m", "dmha_modules.cli", *map(str, args)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def read_scores(path):
    """``{(enrol, test): score}`` of a scores file."""
    return {(enrol, test): float(score) for enrol, test, score in
            (line.split()[:3] for line in path.read_text().splitlines())}


def printed_eer(stdout):
    """The EER (%) ``dmha score`` prints."""
    return float(re.search(r"EER ([0-9.]+)%", stdout).group(1))


def as_norm(unit, cohort, enrol, test, top_n):
    """Adaptive s-norm of one cosine trial (Matejka et al., 2017), written out here."""
    score = unit[enrol] @ unit[test]
    stats = []
    for side in (enrol, test):
        top = np.sort(cohort @ unit[side])[-top_n:]
        stats.append((top.mean(), top.std()))
    return sum((score - mean) / std for mean, std in stats) / 2


def test_vox1_o_trials_score_with_cosine_and_as_norm(trained, tmp_path):
    model, root = trained["output"] / "model", trained["root"]
    test_root = root / "vox1" / "test" / "wav"
    trials = root / "veri_test2.txt"
    # Embeddings of every file, from which the scores are computed here.
    dmha("embed", "--model", model, "--folder", root, "--out", tmp_path / "emb.npz",
         "--no_progress")
    with np.load(tmp_path / "emb.npz") as stored:
        unit = {key: value.reshape(-1) / np.linalg.norm(value) for key, value in stored.items()}
    test_keys = [f"vox1/test/wav/{a.removesuffix('.wav')}" for pair in trained["pairs"]
                 for a in pair]
    cohort_keys = sorted(key for key in unit if key.startswith("vox2/"))
    assert set(test_keys) <= set(unit) and len(cohort_keys) == 4 * TRAIN_SPEAKERS

    stdout = dmha("score", "--model", model, "--trials", trials, "--data_root", test_root,
                  "--out", tmp_path / "cosine.txt", "--no_progress")
    cosine = read_scores(tmp_path / "cosine.txt")
    assert len(cosine) == len((tmp_path / "cosine.txt").read_text().splitlines()) == 66
    assert 0 <= printed_eer(stdout) <= 50
    for a, b in trained["pairs"]:
        expected = unit[f"vox1/test/wav/{a[:-4]}"] @ unit[f"vox1/test/wav/{b[:-4]}"]
        assert cosine[(a, b)] == pytest.approx(expected, abs=1e-4)
    # The recipe's test stage scored the same trials alike (batched there, one by one here).
    recipe = read_scores(trained["output"] / "test_scores.txt")
    for a, b in trained["pairs"]:
        assert recipe[(vox_id(a), vox_id(b))] == pytest.approx(cosine[(a, b)], abs=1e-3)

    # AS-norm, the cohort being VoxCeleb2 dev's .m4a files.
    (tmp_path / "cohort.txt").write_text(
        "".join(f"{root / key}.m4a\n" for key in cohort_keys))
    stdout = dmha("score", "--model", model, "--trials", trials, "--data_root", test_root,
                  "--cohort", tmp_path / "cohort.txt", "--top_n", TOP_N,
                  "--out", tmp_path / "asnorm.txt", "--no_progress")
    normed = read_scores(tmp_path / "asnorm.txt")
    assert len(normed) == 66 and 0 <= printed_eer(stdout) <= 50
    cohort = np.stack([unit[key] for key in cohort_keys])
    for a, b in trained["pairs"]:
        expected = as_norm(unit, cohort, f"vox1/test/wav/{a[:-4]}", f"vox1/test/wav/{b[:-4]}",
                           TOP_N)
        # Relative: a small cohort spread (1 / std) scales float32 rounding up.
        assert normed[(a, b)] == pytest.approx(expected, rel=1e-3, abs=1e-3)
