"""Checkpoints that are never half-written."""

import os
import shutil

from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, Checkpointer
from speechbrain.utils.distributed import if_main_process

PENDING_SUFFIX = ".pending"


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain's ``Checkpointer``, with checkpoints that appear whole or not at all.

    SpeechBrain writes a checkpoint's meta file first and its parameter files
    after, and takes any folder with a meta file as a checkpoint: a run killed
    while saving then resumes from a truncated file and fails. Here the meta
    file is written under a temporary name and renamed once every parameter
    file is on disk; folders left incomplete by a killed run are removed at the
    next save.

    Arguments are those of ``speechbrain.utils.checkpoints.Checkpointer``.

    Example
    -------
    >>> import tempfile, torch
    >>> model = torch.nn.Linear(2, 2)
    >>> checkpointer = AtomicCheckpointer(tempfile.mkdtemp(), {"model": model})
    >>> checkpoint = checkpointer.save_checkpoint()
    >>> sorted(p.name for p in checkpoint.path.iterdir())
    ['CKPT.yaml', 'model.ckpt']
    >>> checkpointer.find_checkpoint() == checkpoint
    True
    """

    def save_checkpoint(self, *args, **kwargs):
        """Saves a checkpoint (see ``Checkpointer.save_checkpoint``), publishing it last."""
        if if_main_process():
            self.remove_incomplete_checkpoints()
        checkpoint = super().save_checkpoint(*args, **kwargs)
        if checkpoint is not None:
            meta = checkpoint.path / METAFNAME
            os.replace(f"{meta}{PENDING_SUFFIX}", meta)
        return checkpoint

    def _save_checkpoint_metafile(self, fpath, meta_to_include={}, end_of_epoch=True):
        return super()._save_checkpoint_metafile(
            f"{fpath}{PENDING_SUFFIX}", meta_to_include, end_of_epoch
        )

    def remove_incomplete_checkpoints(self):
        """Deletes checkpoint folders whose meta file was never published."""
        if not self.checkpoints_dir.is_dir():
            return
        for path in self.checkpoints_dir.iterdir():
            if path.is_dir() and path.name.startswith(CKPT_PREFIX):
                if not (path / METAFNAME).exists():
                    shutil.rmtree(path)
