"""Checkpoints that are never half-written, resumed only by the model that wrote them."""

import os
import shutil

import ruamel.yaml
import torch
from speechbrain.utils.checkpoints import CKPT_PREFIX, METAFNAME, Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from dmha_modules.folders.safety import read_checkpoint
from dmha_modules.recipe.training import OutputFolderError

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
        # Under DDP no rank lists the checkpoints before this one is published:
        # save_and_keep_only's deletions (one broadcast each) must be the same on all.
        ddp_barrier()
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


def recorded_options(path):
    """The plain options of a run's ``hyperparams.yaml``: numbers, strings, lists of them.

    Read without building anything: objects (tagged values such as
    ``!new:``) and nested settings are left out.

    Arguments
    ---------
    path : str
        The ``hyperparams.yaml`` SpeechBrain wrote into a training's output folder.

    Returns
    -------
    dict
        Option name -> value; empty when there is no such file.

    Example
    -------
    >>> path = getfixture("tmp_path") / "hyperparams.yaml"
    >>> _ = path.write_text("lr: 1e-3\\nchannels: [16, 48]\\nmodel: !new:torch.nn.Linear [2, 2]\\n")
    >>> recorded_options(str(path))
    {'lr': 0.001, 'channels': [16, 48]}
    """
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as recorded:
        options = ruamel.yaml.YAML(typ="rt").load(recorded) or {}

    def plain(value):
        if getattr(getattr(value, "tag", None), "value", None):  # an object the YAML builds
            return False
        if isinstance(value, list):
            return all(plain(item) for item in value)
        return value is None or isinstance(value, (bool, int, float, str))

    return {name: list(value) if isinstance(value, list) else value
            for name, value in options.items() if plain(value)}


def refuse_another_model(checkpointer, hparams):
    """Stops a resumed training whose model no longer fits its last checkpoint.

    Checked before anything is written, so a run whose architecture options
    changed (``--ecapa_channels``, ``--emb_dim``, ...) leaves the output
    folder as it was, its ``hyperparams.yaml`` still describing the model of
    its checkpoints, and says which options differ from that run's.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        The training's; its ``torch.nn.Module`` recoverables are compared,
        key for key and shape for shape, with the last checkpoint's.
    hparams : dict
        The training's hyperparameters (``output_folder``: its
        ``hyperparams.yaml`` records the options of the run that wrote the
        checkpoints).

    Raises
    ------
    OutputFolderError
        One line: the checkpoint and the options whose values differ.

    Example
    -------
    >>> folder = str(getfixture("tmp_path"))
    >>> _ = open(os.path.join(folder, "hyperparams.yaml"), "w").write("size: 2\\nepochs: 1\\n")
    >>> save = os.path.join(folder, "save")
    >>> _ = AtomicCheckpointer(save, {"model": torch.nn.Linear(2, 2)}).save_checkpoint()
    >>> wider = AtomicCheckpointer(save, {"model": torch.nn.Linear(3, 2)})
    >>> refuse_another_model(wider, {"output_folder": folder, "size": 3, "epochs": 1})
    Traceback (most recent call last):
    ...
    dmha_modules.recipe.training.OutputFolderError: .../CKPT+...: not resumed: these options build another model than the checkpoint's run; options that differ from it (.../hyperparams.yaml): --size 2 then, 3 now; rerun with that run's options to resume, or choose another --output_folder
    """
    checkpoint = checkpointer.find_checkpoint()
    if checkpoint is None:
        return
    for name, module in checkpointer.recoverables.items():
        if not isinstance(module, torch.nn.Module) or name not in checkpoint.paramfiles:
            continue
        saved, own = read_checkpoint(checkpoint.paramfiles[name]), module.state_dict()
        if saved.keys() == own.keys() and all(saved[k].shape == own[k].shape for k in own):
            continue
        record = os.path.join(hparams["output_folder"], "hyperparams.yaml")
        differing = [f"--{option} {value} then, {hparams[option]} now"
                     for option, value in recorded_options(record).items()
                     if not option.startswith("__") and option in hparams
                     and hparams[option] != value]
        raise OutputFolderError(
            f"{checkpoint.path}: not resumed: these options build another model than the "
            "checkpoint's run; " + (f"options that differ from it ({record}): "
                                    + ", ".join(differing) if differing else
                                    f"no option differs from {record} (was the YAML file "
                                    "edited?)")
            + "; rerun with that run's options to resume, or choose another --output_folder")
