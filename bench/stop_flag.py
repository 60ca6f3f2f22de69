#!/usr/bin/env python3
"""What the per-batch stop flag costs under DDP: one all_reduce against SpeechBrain's broadcast.

    python bench/stop_flag.py [--processes 2] [--calls 2000]

After every training batch the ranks agree on SIGTERM and on SpeechBrain's
timed checkpoint with one ``all_reduce`` of two integers
(``dmha_modules.recipe.preemption.StopRequest.agreed``); SpeechBrain alone
broadcasts its checkpoint decision as a pickled object
(``torch.distributed.broadcast_object_list``) after every batch when
``ckpt_interval_minutes`` is set. Prints microseconds per call of each, gloo
processes on this machine (the cost a CPU training pays; nccl on GPUs is its own).
"""

import argparse
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank, processes, port, calls, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=processes)
    torch.set_num_threads(1)
    timings = {}
    for name in ("all_reduce of 2 ints (dmha)", "broadcast_object_list (SpeechBrain)"):
        for repeat in range(2):  # the first pass warms up
            dist.barrier()
            start = time.perf_counter()
            for _ in range(calls):
                if name.startswith("all_reduce"):
                    flags = torch.tensor([0, int(rank == 0)])
                    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                else:
                    dist.broadcast_object_list([rank == 0], src=0)
            timings[name] = (time.perf_counter() - start) / calls * 1e6
    if rank == 0:
        results.update(timings)
    dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(worker, args=(args.processes, port, args.calls, results), nprocs=args.processes)
    print(f"{args.processes} gloo processes, {args.calls} calls, load {os.getloadavg()[0]:.2f}")
    for name, micros in results.items():
        print(f"{name}: {micros:.0f} us per call")


if __name__ == "__main__":
    main()
