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
