"""``dmha prepare --jobs 2`` killed with ``kill -9``: its header-reading workers end with it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.prepare.prepare_helpers import write_text

# The real command line, with each header read slowed down so that the workers
# are still busy when the parent is killed (forked workers inherit the patch).
SLOW_PREPARE = """
import sys, time
from dmha_modules.io import audio_headers
from dmha_modules.cli import main
read = audio_headers.read_audio_header
def slow(path):
    time.sleep(0.05)
    return read(path)
audio_headers.read_audio_header = slow
sys.exit(main(sys.argv[1:]))
"""


def children(pid):
    """Process ids whose parent is ``pid``."""
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with open(task / "children", encoding="ascii") as listed:
            found.update(int(child) for child in listed.read().split())
    return found


def running(pid):
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_prepare_ends_its_workers(tmp_path):
    data = tmp_path / "corpus"
    # Two chunks of header reads (1024 files each), so both workers are busy.
    utterances = [f"utt{i:05d}" for i in range(2100)]
    write_text(data / "train/wav.scp", "".join(f"{u} missing/{u}.wav\n" for u in utterances))
    write_text(data / "train/utt2spk", "".join(f"{u} spk{i % 7}\n" for i, u in enumerate(utterances)))
    parent = subprocess.Popen(
        [sys.executable, "-c", SLOW_PREPARE, "prepare", "kaldi", "--data_folder", str(data),
         "--save_folder", str(tmp_path / "prep"), "--no-download", "--jobs", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(children(parent.pid)) < 2 and time.monotonic() < deadline:
            assert parent.poll() is None, "prepare ended before its workers started"
            time.sleep(0.1)
        workers = children(parent.pid)
        assert len(workers) >= 2
        time.sleep(1.0)  # the workers are reading headers
        assert all(running(worker) for worker in workers)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while any(running(worker) for worker in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [worker for worker in workers if running(worker)]
    for worker in survivors:  # do not leave them behind, whatever the outcome
        os.kill(worker, signal.SIGKILL)
    assert not survivors, f"workers {survivors} outlived their killed parent"
