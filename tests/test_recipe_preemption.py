"""SIGTERM (a cluster's preemption notice): the recipe checkpoints, exits 143, and the rerun resumes.

(a) One process, the recipe under a wrapper that records each optimizer step
(its lr, its batch) and holds one batch until the signal arrives, so the stop
falls mid-epoch at a known step. (b) The documented SLURM batch script
(``recipes/slurm/train.sbatch``) run on this machine with stand-ins for
``srun`` and ``scontrol``: ``torchrun`` with 2 gloo processes and a c10d
rendezvous on localhost, SIGTERM sent to the batch shell as
``#SBATCH --signal=B:TERM@...`` does, the job requeued, the rerun resumed.
The trainings are the tiny ones of ``tests/test_recipe.py``, on generated voices.
"""

import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.recipe_helpers import REPO, logged_epochs, recipe_command, write_kaldi_corpus

PREEMPTED = 143  # 128 + SIGTERM, what a shell reports for a process that SIGTERM ended
INTRA_EPOCH = "brain_intra_epoch_ckpt"  # SpeechBrain's meta key of intra-epoch checkpoints


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A Kaldi data dir of 16 speakers x 3 utterances of 1.2-1.8 s."""
    return write_kaldi_corpus(tmp_path_factory.mktemp("corpus"), [8 + 2 * s for s in range(16)])


# The recipe, recording per optimizer step "step lr steps_per_epoch epoch ids..."; at step
# HOLD it writes <record>.held and waits there for SIGTERM (first run only).
RECORDING_WRAPPER = '''
import os, sys, time
sys.path.insert(0, {recipes!r})
import train
from dmha_modules.recipe.brains import DMHABrain
try:
    from dmha_modules.recipe.preemption import STOP
except ImportError:  # a recipe without it: SIGTERM ends the process while it waits
    STOP = None

record, hold = {record!r}, {hold}
start = DMHABrain.on_fit_batch_start

def recording_start(self, batch, should_step):
    start(self, batch, should_step)
    schedule = self.hparams.lr_annealing
    with open(record, "a") as f:
        f.write(" ".join(map(str, [schedule.step, repr(self.optimizer.param_groups[0]["lr"]),
                                   schedule.steps_per_epoch, self.hparams.epoch_counter.current,
                                   *batch.id])) + "\\n")
    if schedule.step == hold and not os.path.exists(record + ".held"):
        open(record + ".held", "w").close()
        deadline = time.time() + 120
        while not getattr(STOP, "requested", False) and time.time() < deadline:
            time.sleep(0.01)

DMHABrain.on_fit_batch_start = recording_start
sys.argv = ["train.py"] + sys.argv[1:]
sys.exit(train.main())
'''

LR, WARMUP_EPOCHS, FINAL_RATIO, EPOCHS = 0.01, 0.5, 0.1, 2


def schedule_lr(step, steps_per_epoch):
    """The lr of optimizer step ``step`` (from 1): linear warm-up, then half a cosine down.

    Written here from the schedule's definition (docs/training.md), not taken from the code.
    """
    warmup = max(1, round(WARMUP_EPOCHS * steps_per_epoch))
    if step <= warmup:
        return LR * step / warmup
    total = EPOCHS * steps_per_epoch
    progress = min(1.0, (step - warmup) / (total - warmup))
    low = FINAL_RATIO * LR
    return low + (LR - low) * (1 + math.cos(math.pi * progress)) / 2


def small_batches(command):
    """``command`` with batches of 2 crops (12 per epoch on this corpus), not the tiny 8."""
    return [arg for arg in command if not arg.startswith("--max_batch_seconds")] + [
        "--max_batch_seconds=2"]


def wait_for(path, process, seconds=300):
    """Polls until ``path`` exists; the process must still run."""
    deadline = time.time() + seconds
    while not Path(path).exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def intra_epoch_checkpoints(output):
    """The checkpoint folders whose published meta marks them intra-epoch."""
    return [meta.parent for meta in sorted((Path(output) / "save").glob("CKPT*/CKPT.yaml"))
            if yaml.safe_load(meta.read_text()).get(INTRA_EPOCH)]


@pytest.mark.slow
def test_sigterm_checkpoints_mid_epoch_exits_143_and_the_rerun_resumes(corpus, tmp_path):
    output, record, hold = tmp_path / "run", tmp_path / "steps.txt", 5
    wrapper = tmp_path / "train_recording.py"
    wrapper.write_text(RECORDING_WRAPPER.format(
        recipes=str(REPO / "recipes"), record=str(record), hold=hold))
    command = [sys.executable, str(wrapper)] + small_batches(recipe_command(
        "speaker.yaml", corpus, output, f"--number_of_epochs={EPOCHS}",
        f"--lr={LR}", f"--warmup_epochs={WARMUP_EPOCHS}", f"--lr_final_ratio={FINAL_RATIO}",
    ))[2:]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    wait_for(f"{record}.held", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)

    assert process.returncode == PREEMPTED, stderr[-3000:]
    assert "Traceback" not in stderr
    [checkpoint] = intra_epoch_checkpoints(output)
    where = f"optimizer step {hold}, epoch 1 after {hold} batches"
    assert stderr.strip().splitlines()[-1] == (
        f"recipes/train.py: SIGTERM: checkpoint saved in {checkpoint} at {where}; "
        "rerun the same command to resume")
    assert logged_epochs(output) == []  # stopped within the first epoch
    steps_before = [int(line.split()[0]) for line in record.read_text().splitlines()]
    assert steps_before == list(range(1, hold + 1))

    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from {checkpoint}: {where}" in (output / "log.txt").read_text()
    assert (output / "model" / "embedding_model.ckpt").is_file()
    assert logged_epochs(output) == [1, 2]

    rows = [line.split() for line in record.read_text().splitlines()]
    steps = [int(row[0]) for row in rows]
    per_epoch = int(rows[0][2])
    assert per_epoch > hold  # the stop fell mid-epoch
    assert steps == list(range(1, EPOCHS * per_epoch + 1))  # the count goes on from the stop
    for row in rows:  # every lr, the first resumed one included, is the schedule's
        assert float(row[1]) == pytest.approx(schedule_lr(int(row[0]), per_epoch), rel=1e-9)
    # The data sampler goes on where it stopped: each training utterance once per epoch.
    train_ids = sorted(line.split(",")[0] for line in
                       (output / "manifests" / "train.csv").read_text().splitlines()[1:])
    for epoch in range(1, EPOCHS + 1):
        ids = [i for row in rows if int(row[3]) == epoch for i in row[4:]]
        assert sorted(ids) == train_ids, epoch


SLURM_SCRIPT = REPO / "recipes" / "slurm" / "train.sbatch"
# Stand-ins for SLURM's commands: srun runs its command here (its own options
# dropped); scontrol records what it was asked.
FAKE_SRUN = '#!/bin/bash\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n'
FAKE_SCONTROL = '#!/bin/bash\necho "$@" >> "$SCONTROL_LOG"\n'


def free_port():
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def slurm_environment(tmp_path):
    """The variables SLURM gives a one-node job, and the stand-ins first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in [("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)]:
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return dict(
        os.environ, PATH=f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        SLURM_JOB_ID="4242", SLURM_NNODES="1", NPROC_PER_NODE="2", MASTER_ADDR="localhost",
        MASTER_PORT=str(free_port()), SCONTROL_LOG=str(tmp_path / "scontrol.log"),
        OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_the_slurm_script_requeues_on_sigterm_and_the_requeued_job_resumes(corpus, tmp_path):
    output, env = tmp_path / "ddp", slurm_environment(tmp_path)
    recipe_args = small_batches(recipe_command("speaker.yaml", corpus, output,
                                               "--number_of_epochs=3"))[2:]
    command = ["bash", str(SLURM_SCRIPT), *recipe_args]
    assert re.search(r"^srun .*torchrun .*--rdzv_backend=c10d .*recipes/train.py \"\$@\" &$",
                     SLURM_SCRIPT.read_text(), re.M)
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while logged_epochs(output) != [1]:  # the first epoch done; the second one trains
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "no epoch logged"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)  # to the batch shell, as --signal=B:TERM@120 does
    stdout, stderr = process.communicate(timeout=300)

    assert process.returncode == 0, stderr[-3000:]
    assert "train.sbatch: stopped by SIGTERM" in stdout
    assert Path(env["SCONTROL_LOG"]).read_text() == "requeue 4242\n"
    [checkpoint] = intra_epoch_checkpoints(output)
    # Both ranks stopped after the same batch; only rank 0 wrote (and names) the checkpoint.
    stops = re.findall(r"recipes/train\.py: SIGTERM: checkpoint saved( in \S+)? at "
                       r"(optimizer step \d+, epoch (\d+) after \d+ batches)", stderr)
    assert sorted(stops) == sorted([("", *stops[0][1:]), (f" in {checkpoint}", *stops[0][1:])])
    epoch = int(stops[0][2])  # the second, unless this machine is very slow
    assert epoch in (2, 3) and logged_epochs(output) == list(range(1, epoch))

    # The requeued job runs the same script again: it resumes there and finishes.
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"Resumed from {checkpoint}: {stops[0][1]}" in (output / "log.txt").read_text()
    assert logged_epochs(output) == [1, 2, 3]
    assert (output / "model" / "embedding_model.ckpt").is_file()
    assert Path(env["SCONTROL_LOG"]).read_text() == "requeue 4242\n"  # not requeued again
