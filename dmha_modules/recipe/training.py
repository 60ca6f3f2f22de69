"""Training with SpeechBrain's ``Brain``: length-bucketed batches and the DDP around them.

``recipes/train.py`` trains on batches of similar length
(:func:`bucketed_loader_kwargs`). Under DDP (``torchrun``) each process gets
its own share of those batches (:class:`RankBatches`, set up by
:class:`DDPBrain`), and on CPU the gloo backend is chosen
(:func:`default_ddp_backend`) and used without the SyncBatchNorm conversion
that gloo lacks. One training at a time writes an output folder
(:func:`output_folder_lock`), and only once its checks pass (:class:`HeldLog`).
"""

import contextlib
import dataclasses
import fcntl
import logging
import os
import time

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from dmha_modules.recipe.preemption import STOP, Preempted

logger = logging.getLogger(__name__)


class RankBatches(torch.utils.data.distributed.DistributedSampler):
    """This rank's share of the batches of a batch sampler.

    The shares are disjoint across ranks and reshuffled each epoch; the
    remainder that does not divide evenly is dropped (SpeechBrain's
    ``DistributedSamplerWrapper`` repeats batches instead, and yields single
    ids when a rank gets one batch).

    Arguments
    ---------
    batch_sampler : torch.utils.data.Sampler
        Yields batches (lists of indices) and has ``set_epoch``, as
        SpeechBrain's ``DynamicBatchSampler``.
    rank : int
        This process's rank.
    num_replicas : int, optional
        The number of ranks; default the process group's size.

    Example
    -------
    >>> from speechbrain.dataio.dataset import DynamicItemDataset
    >>> dataset = DynamicItemDataset({f"utt{i}": {"duration": 1.0} for i in range(8)})
    >>> hparams = {"crop_seconds": 3.0, "num_buckets": 1, "max_batch_seconds": 2.0,
    ...            "seed": 0, "num_workers": 0}
    >>> def share(rank):  # each rank (process) has its own batch sampler
    ...     batches = bucketed_loader_kwargs(hparams, dataset, train=True)["batch_sampler"]
    ...     return list(RankBatches(batches, rank, num_replicas=2))
    >>> shares = [share(rank) for rank in (0, 1)]
    >>> [len(share) for share in shares]
    [2, 2]
    >>> ids = [{i for batch in share for i in batch} for share in shares]
    >>> ids[0].isdisjoint(ids[1]), sorted(ids[0] | ids[1])
    (True, [0, 1, 2, 3, 4, 5, 6, 7])
    """

    def __init__(self, batch_sampler, rank, num_replicas=None):
        super().__init__(
            batch_sampler, num_replicas=num_replicas, rank=rank, shuffle=True, drop_last=True
        )
        self.batch_sampler = batch_sampler

    def __iter__(self):
        batches = list(self.batch_sampler)
        return (batches[i] for i in super().__iter__())

    def set_epoch(self, epoch):
        """Sets the epoch of the split and of the batch sampler."""
        super().set_epoch(epoch)
        self.batch_sampler.set_epoch(epoch)


class DDPBrain(sb.Brain):
    """SpeechBrain's ``Brain``, with DDP suited to length-bucketed batches and to CPUs.

    Three differences. On SIGTERM (:mod:`dmha_modules.recipe.preemption`) the
    training stops at the end of a batch, all ranks together, with an
    intra-epoch checkpoint that a rerun resumes from, and says where it
    resumed. Under DDP: a training ``batch_sampler`` is
    split among the ranks by :class:`RankBatches` (SpeechBrain pads the batch
    list by repeating batches so that it divides among the ranks; here the
    remainder is dropped, and the epoch's shuffle picks other batches to drop
    next time), and with the gloo backend the modules are wrapped without
    SpeechBrain's SyncBatchNorm conversion, which gloo lacks.

    Arguments are those of ``speechbrain.Brain``.

    Example
    -------
    >>> brain = DDPBrain(modules={"model": torch.nn.Linear(2, 2)}, run_opts={"device": "cpu"})
    >>> brain.distributed_launch, brain.device
    (False, 'cpu')
    """

    def _train_loader_specifics(self, dataset, loader_kwargs):
        """SpeechBrain's, except that DDP ranks share a batch sampler by ``RankBatches``."""
        batch_sampler = loader_kwargs.get("batch_sampler")
        if not self.distributed_launch or batch_sampler is None:
            return super()._train_loader_specifics(dataset, loader_kwargs)
        self.train_sampler = RankBatches(batch_sampler, rank=self.rank)
        loader_kwargs["batch_sampler"] = self.train_sampler
        return loader_kwargs

    def fit(self, *args, **kwargs):
        """SpeechBrain's, with SIGTERM deferred to the end of a training batch.

        A signal after the last training batch (in the last validation)
        stops the run once ``fit`` is done, the end-of-epoch checkpoint saved.
        """
        with STOP.deferred():
            super().fit(*args, **kwargs)
            stop, _ = STOP.agreed(False, self.device)
        if stop:
            raise Preempted("SIGTERM after the last training batch; the end-of-epoch "
                            "checkpoint is kept")

    def on_fit_start(self):
        """SpeechBrain's, which resumes from the last checkpoint, and says where."""
        super().on_fit_start()
        checkpoint = self.checkpointer.find_checkpoint() if self.checkpointer else None
        if checkpoint is not None:
            logger.info("Resumed from %s: optimizer step %d, epoch %d after %d batches",
                        checkpoint.path, self.optimizer_step,
                        self.epoch_in_progress(before_fit=True), self.step)

    def epoch_in_progress(self, before_fit=False):
        """The epoch being trained, counted from 1; ``before_fit``: the one to train next."""
        current = getattr(getattr(self.hparams, "epoch_counter", None), "current", 0)
        return current + 1 if before_fit else current

    def _should_save_intra_epoch_ckpt(self, last_ckpt_time, steps_since_ckpt):
        """SpeechBrain's timed checkpoint (rank 0 decides), and the stop on SIGTERM.

        Both in one ``all_reduce`` under DDP (SpeechBrain broadcasts its
        decision alone, as a pickled object, after every batch).
        """
        elapsed_minutes = (time.time() - last_ckpt_time) / 60.0
        due = self.checkpointer is not None and (
            0 < self.ckpt_interval_minutes < elapsed_minutes
            or 0 < self.ckpt_interval_steps <= steps_since_ckpt)
        stop, due = STOP.agreed(due, self.device)
        if stop:
            self.stop_for_requeue()
        return due

    def stop_for_requeue(self):
        """Saves an intra-epoch checkpoint (rank 0 writes it) and raises ``Preempted``."""
        where = "no checkpointer: nothing saved"
        if self.checkpointer is not None:
            self._save_intra_epoch_ckpt()
            ddp_barrier()  # the other ranks exit once rank 0 has written it
            where = "checkpoint saved"
            if if_main_process():
                where += f" in {self.checkpointer.find_checkpoint().path}"
        message = (f"SIGTERM: {where} at optimizer step {self.optimizer_step}, epoch "
                   f"{self.epoch_in_progress()} after {self.step} batches")
        if if_main_process():
            logger.info(message)
        raise Preempted(message)

    def _wrap_distributed(self):
        """SpeechBrain's, except that gloo DDP goes without SyncBatchNorm."""
        if self.distributed_launch and self.distributed_backend == "gloo":
            for name, module in self.modules.items():
                if any(p.requires_grad for p in module.parameters()):
                    self.modules[name] = torch.nn.parallel.DistributedDataParallel(
                        module, find_unused_parameters=self.find_unused_parameters
                    )
            return
        super()._wrap_distributed()


def default_ddp_backend(run_opts):
    """``run_opts`` with the gloo backend when there is no GPU and none was given.

    SpeechBrain's default, nccl, needs GPUs. ``Brain`` only reads the options
    marked as given, so gloo is marked so.

    Arguments
    ---------
    run_opts : speechbrain.core.RunOptions
        From ``speechbrain.parse_arguments``.

    Returns
    -------
    speechbrain.core.RunOptions
    """
    if torch.cuda.is_available() or "distributed_backend" in run_opts.overridden_args:
        return run_opts
    return dataclasses.replace(
        run_opts,
        distributed_backend="gloo",
        overridden_args=run_opts.overridden_args | {"distributed_backend"},
    )


def bucketed_loader_kwargs(hparams, dataset, train):
    """Length-bucketed batches (SpeechBrain's ``DynamicBatchSampler``) so padding stays small.

    Bucket edges are quantiles of the actual lengths (training crops count as
    ``crop_seconds``), so every bucket holds data and batches fill up to
    ``max_batch_seconds``. Training batches come in random order, reshuffled
    each epoch; the others longest first.

    Arguments
    ---------
    hparams : dict
        ``crop_seconds``, ``num_buckets``, ``max_batch_seconds``, ``seed``
        and ``num_workers``.
    dataset : speechbrain.dataio.dataset.DynamicItemDataset
        Its rows have a ``duration`` in seconds.
    train : bool
        Whether these are training batches.

    Returns
    -------
    dict
        ``batch_sampler`` and ``num_workers``, loader kwargs for ``Brain.fit``
        and ``Brain.evaluate``.
    """
    crop = hparams["crop_seconds"]
    lengths = [float(row["duration"]) for row in dataset.data.values()]
    if train:
        lengths = [min(length, crop) for length in lengths]
    quantiles = np.linspace(0, 1, hparams["num_buckets"] + 1)[1:]
    boundaries = sorted(set(np.quantile(lengths, quantiles).round(3).tolist()))
    sampler = sb.dataio.sampler.DynamicBatchSampler(
        dataset,
        max_batch_length=hparams["max_batch_seconds"],
        bucket_boundaries=boundaries,
        lengths_list=lengths,
        shuffle=train,
        batch_ordering="random" if train else "descending",
        seed=hparams["seed"],
    )
    return {"batch_sampler": sampler, "num_workers": hparams["num_workers"]}


LOCK_FILE = "train.lock"


class OutputFolderError(RuntimeError):
    """An output folder that a training cannot use: in use by another, or not writable.

    Example
    -------
    >>> raise OutputFolderError("results/age/1986 is in use by a running training (pid 7: ...)")
    Traceback (most recent call last):
    ...
    dmha_modules.recipe.training.OutputFolderError: results/age/1986 is in use by a running training (pid 7: ...)
    """


@contextlib.contextmanager
def output_folder_lock(folder, command):
    """Holds ``<folder>/train.lock`` for the block, so that one training at a time writes there.

    The lock is the kernel's (``flock``), held by the open file: it goes
    with the process, so a killed training leaves nothing stuck. The file
    names the holder's process and command while it runs.

    Arguments
    ---------
    folder : str
        The output folder (created when absent).
    command : str
        What the holder runs, for the message of one that finds it taken.

    Raises
    ------
    OutputFolderError
        At once, when another process holds the lock (naming it) or the
        folder cannot be written.

    Example
    -------
    >>> folder = str(getfixture("tmp_path"))
    >>> with output_folder_lock(folder, "train.py age.yaml"):
    ...     with output_folder_lock(folder, "train.py speaker.yaml"):
    ...         pass
    Traceback (most recent call last):
    ...
    dmha_modules.recipe.training.OutputFolderError: ... is in use by a running training (pid ...: train.py age.yaml); ...
    """
    path = os.path.join(folder, LOCK_FILE)
    try:
        os.makedirs(folder, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")
    except OSError as error:
        raise OutputFolderError(f"{folder}: cannot write the output folder there "
                                f"({error.strerror}); choose another --output_folder") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "its process id not yet written"
            raise OutputFolderError(
                f"{folder} is in use by a running training ({holder}); wait for it to end "
                "or choose another --output_folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}: {command}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)  # no holder any more; closing the file releases the lock


class HeldLog(logging.Handler):
    """Log records held until the output folder's ``log.txt`` exists, then written there.

    The recipe checks its options, data and checkpoints before it writes into
    the output folder, so that a refused run leaves the folder as it was; what
    those steps log (the data preparation's summary) goes to the console at
    once and into ``log.txt`` once SpeechBrain has set it up.

    Example
    -------
    >>> held = HeldLog()
    >>> logging.getLogger().addHandler(held)
    >>> logging.getLogger("prepare").warning("3 rows rejected")
    >>> logging.getLogger().removeHandler(held)
    >>> path = getfixture("tmp_path") / "log.txt"
    >>> log_file = logging.FileHandler(path)
    >>> held.write_to(log_file)
    >>> log_file.close()
    >>> path.read_text()
    '3 rows rejected\\n'
    """

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def write_to(self, handler):
        """Writes the held records through ``handler`` (those of its level and above)."""
        for record in self.records:
            if record.levelno >= handler.level:
                handler.handle(record)


@sb.utils.checkpoints.register_checkpoint_hooks
class WarmupCosineLR:
    """Learning rate per optimizer step: a linear warm-up, then half a cosine down.

    Over the first ``warmup_epochs`` the rate rises linearly from ``lr /
    warmup_steps`` to ``lr``; it then falls along half a cosine to
    ``final_ratio * lr`` at the end of ``epochs`` epochs, and stays there.
    The run's length must be known, so the recipe sets ``steps_per_epoch``
    from its training loader before the first step (:class:`dmha_modules.recipe.brains.DMHABrain`'s
    ``make_dataloader``). Saved with the checkpoints, so a resumed run goes
    on where it stopped.

    Arguments
    ---------
    lr : float
        The peak rate.
    epochs : int
        The planned length of the run.
    warmup_epochs : float
        Length of the warm-up, in epochs.
    final_ratio : float
        The last rate, as a share of ``lr``.

    Example
    -------
    >>> schedule = WarmupCosineLR(lr=1.0, epochs=3, warmup_epochs=1, final_ratio=0.0)
    >>> schedule.steps_per_epoch = 2
    >>> optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    >>> rates = []
    >>> for _ in range(7):
    ...     schedule(optimizer)
    ...     rates.append(round(optimizer.param_groups[0]["lr"], 3))
    >>> rates  # warm-up over steps 1-2, cosine over steps 3-6
    [0.5, 1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    """

    def __init__(self, lr, epochs, warmup_epochs=1.0, final_ratio=0.01):
        self.lr = lr
        self.epochs = epochs
        self.warmup_epochs = warmup_epochs
        self.final_ratio = final_ratio
        self.steps_per_epoch = None
        self.step = 0

    def rate(self, step):
        """The rate at optimizer step ``step`` (counted from 1)."""
        warmup = max(1, round(self.warmup_epochs * self.steps_per_epoch))
        if step <= warmup:
            return self.lr * step / warmup
        total = max(warmup + 1, self.epochs * self.steps_per_epoch)
        progress = min(1.0, (step - warmup) / (total - warmup))
        low = self.final_ratio * self.lr
        return low + (self.lr - low) * 0.5 * (1 + np.cos(np.pi * progress))

    def __call__(self, optimizer):
        """Counts the optimizer step about to be taken and sets its rate in all groups."""
        if self.steps_per_epoch is None:
            raise RuntimeError("WarmupCosineLR: steps_per_epoch is not set")
        self.step += 1
        for group in optimizer.param_groups:
            group["lr"] = float(self.rate(self.step))

    @sb.utils.checkpoints.mark_as_saver
    def save(self, path):
        """Saves the step count."""
        torch.save({"step": self.step}, path)

    @sb.utils.checkpoints.mark_as_loader
    def load(self, path, end_of_epoch=False):
        """Loads the step count."""
        del end_of_epoch  # the count is the same either way
        self.step = torch.load(path, weights_only=True)["step"]
