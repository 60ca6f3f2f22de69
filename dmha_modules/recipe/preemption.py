"""Stopping a training on SIGTERM, the notice a cluster gives before it preempts a job.

``recipes/train.py`` installs :data:`STOP`'s handler. While the model trains
(:meth:`StopRequest.deferred`, around ``Brain.fit``) the signal only sets a
flag; after each training batch the ranks agree on it (one ``all_reduce``,
:meth:`StopRequest.agreed`) and, if any was signalled, save an intra-epoch
checkpoint (the model, the optimizer, the lr schedule's step, the epoch and
the data loader's position in it), then raise :class:`Preempted`, and the
recipe exits with :data:`PREEMPTED`. Outside training the signal raises
:class:`Preempted` at once (the last checkpoint is kept). Rerunning the same
command resumes from the checkpoint. docs/training.md, "Clusters", shows the
SLURM batch script that requeues the job on it.
"""

import contextlib
import signal

import torch

# The status a shell reports for a process that SIGTERM ended (128 + 15): the
# recipe's exit status after it saved its checkpoint on SIGTERM.
PREEMPTED = 128 + signal.SIGTERM


class Preempted(Exception):
    """The training stopped on SIGTERM; the message says which checkpoint it resumes from.

    Example
    -------
    >>> raise Preempted("checkpoint saved at optimizer step 4")
    Traceback (most recent call last):
    ...
    dmha_modules.recipe.preemption.Preempted: checkpoint saved at optimizer step 4
    """


class StopRequest:
    """Whether SIGTERM arrived; deferred to a batch boundary while training.

    Example
    -------
    >>> import os
    >>> stop = StopRequest()
    >>> previous = stop.install()
    >>> with stop.deferred():
    ...     os.kill(os.getpid(), signal.SIGTERM)  # only noted while deferred
    ...     stop.agreed(due=False)  # (stop, checkpoint due) over all ranks: one here
    (True, False)
    >>> try:
    ...     os.kill(os.getpid(), signal.SIGTERM)  # raises at once outside training
    ... except Preempted as error:
    ...     print(error)
    SIGTERM before or after training; the last checkpoint is kept
    >>> _ = signal.signal(signal.SIGTERM, previous)
    """

    def __init__(self):
        self.requested = False
        self.deferring = 0

    def install(self):
        """Handles SIGTERM from now on; returns the previous handler."""
        self.requested = False
        return signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum, frame):
        """The signal handler: notes the request; raises :class:`Preempted` unless deferred."""
        del signum, frame
        self.requested = True
        if not self.deferring:
            raise Preempted("SIGTERM before or after training; the last checkpoint is kept")

    @contextlib.contextmanager
    def deferred(self):
        """Within the block SIGTERM only sets ``requested``, for :meth:`agreed` to act on."""
        self.deferring += 1
        try:
            yield
        finally:
            self.deferring -= 1

    def agreed(self, due, device="cpu"):
        """Whether any rank was signalled, and rank 0's ``due``: one collective under DDP.

        Arguments
        ---------
        due : bool
            This rank's own decision to checkpoint now (only rank 0's counts,
            so that all ranks take SpeechBrain's timed checkpoints together).
        device : str or torch.device
            Where the collective's tensor lives (the GPU under nccl).

        Returns
        -------
        tuple of bool
            (stop, due), the same on every rank.
        """
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self.requested, bool(due)
        first = torch.distributed.get_rank() == 0
        flags = torch.tensor([int(self.requested), int(bool(due) and first)], device=device)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        return bool(flags[0]), bool(flags[1])


# The recipe's one request (its handler is process-wide, as signals are).
STOP = StopRequest()
