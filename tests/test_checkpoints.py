"""A checkpoint interrupted while saving is never taken for a whole one."""

import pytest
import torch

from dmha_modules.recipe.checkpoints import AtomicCheckpointer


class Interrupted(Exception):
    pass


def test_interrupted_save_leaves_the_previous_checkpoint_in_charge(tmp_path):
    model = torch.nn.Linear(3, 3)
    checkpointer = AtomicCheckpointer(tmp_path, {"model": model})
    first = checkpointer.save_checkpoint(meta={"n": 1})

    def die_while_saving(obj, path):
        path.write_bytes(b"trunc")  # a truncated parameter file, as a kill leaves
        raise Interrupted

    checkpointer.add_recoverable("optimizer", model, custom_save_hook=die_while_saving)
    with pytest.raises(Interrupted):
        checkpointer.save_checkpoint(meta={"n": 2})
    assert len(list(tmp_path.iterdir())) == 2  # the partial folder is on disk...
    assert checkpointer.find_checkpoint() == first  # ...but not a checkpoint

    del checkpointer.recoverables["optimizer"]
    second = checkpointer.save_checkpoint(meta={"n": 3})
    assert {p.name for p in tmp_path.iterdir()} == {first.path.name, second.path.name}
    assert checkpointer.find_checkpoint(max_key="n") == second


# Two gloo ranks save and keep one checkpoint, three times; rank 0 publishes each one
# late (its meta file renamed after a second), as a loaded machine may.
DDP_SAVES = """
import datetime, os, sys, time
import torch, torch.distributed as dist
from dmha_modules.recipe import checkpoints
rank, folder, port = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                        world_size=2, timeout=datetime.timedelta(seconds=20))
replace = os.replace
if rank == 0:
    checkpoints.os.replace = lambda src, dst: (time.sleep(1.0), replace(src, dst))
checkpointer = checkpoints.AtomicCheckpointer(folder, {"model": torch.nn.Linear(2, 2)})
for i in range(3):
    checkpointer.save_and_keep_only(meta={"i": i}, num_to_keep=1)
dist.barrier()
dist.destroy_process_group()
"""


def test_ddp_ranks_keep_the_same_checkpoints_when_rank_0_publishes_late(tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    ranks = [subprocess.Popen([sys.executable, "-c", DDP_SAVES, str(rank), str(tmp_path), port],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    # Before every rank waited for the publication, rank 1 listed the checkpoints
    # without the new one, skipped a deletion that rank 0 made, and the ranks' collectives
    # no longer matched: a hang (here the process group's 20 s timeout).
    outputs = [rank.communicate(timeout=120) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], outputs[0][1][-2000:]
    [kept] = list(tmp_path.iterdir())
    assert (kept / "CKPT.yaml").is_file()
