"""One training at a time per output folder, and folders that cannot be written.

A second recipe run against an output folder whose lock is held stops at
once, naming the running one; a lock left by a killed process blocks
nothing; a read-only output folder is one message, not a traceback.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from dmha_modules.recipe.training import LOCK_FILE, OutputFolderError, output_folder_lock
from tests.recipe_helpers import logged_epochs, recipe_command, run_recipe

HOLD_LOCK = """
import sys, time
from dmha_modules.recipe.training import output_folder_lock
with output_folder_lock(sys.argv[1], "the holder's command"):
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_second_run_stops_at_once_naming_the_running_one(tmp_path):
    output = tmp_path / "out"
    with output_folder_lock(str(output), "recipes/train.py hparams/age.yaml (the first run)"):
        started = time.monotonic()
        result = run_recipe(recipe_command("age.yaml", tmp_path / "corpus", output), expect=1)
        elapsed = time.monotonic() - started
    assert (f"{output} is in use by a running training (pid {os.getpid()}: recipes/train.py "
            "hparams/age.yaml (the first run))") in result.stderr
    assert "Traceback" not in result.stderr
    # Stopped before the experiment folder, the data or the log were touched.
    assert not (output / "hyperparams.yaml").exists() and not (output / "manifests").exists()
    assert logged_epochs(output) == []
    assert elapsed < 60


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_blocks_nothing(tmp_path):
    folder = str(tmp_path / "out")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, folder], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline() == "holding\n"
    with pytest.raises(OutputFolderError, match=f"pid {holder.pid}: the holder's command"):
        with output_folder_lock(folder, "second"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    # The killed holder's file stays, naming it; its lock went with it.
    assert f"pid {holder.pid}" in (tmp_path / "out" / LOCK_FILE).read_text()
    with output_folder_lock(folder, "third"):
        assert (tmp_path / "out" / LOCK_FILE).read_text() == f"pid {os.getpid()}: third\n"
    assert (tmp_path / "out" / LOCK_FILE).read_text() == ""


@pytest.fixture
def unwritable(tmp_path):
    """A folder this process cannot create folders in (root ignores permissions: /sys)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    try:
        os.mkdir("/sys/dmha_write_probe")
    except OSError:
        yield "/sys"
        return
    os.rmdir("/sys/dmha_write_probe")
    pytest.skip("no folder is read-only for root here")


@pytest.mark.slow
def test_read_only_output_folder_is_one_message(unwritable, tmp_path):
    output = os.path.join(unwritable, "out")
    result = run_recipe(recipe_command("age.yaml", tmp_path, output), expect=1)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"recipes/train.py: {output}")
    assert "choose a writable --output_folder" in lines[-1]
    assert "Traceback" not in result.stderr


def test_lock_reports_an_unwritable_folder(unwritable):
    with pytest.raises(OutputFolderError, match="cannot write the output folder there"):
        with output_folder_lock(os.path.join(unwritable, "out"), "x"):
            pass
