"""Several processes, one run: DistributedDataParallel under torchrun.

``torchrun --nproc_per_node=N train.py ...`` starts N processes with RANK, LOCAL_RANK and
WORLD_SIZE set; each drives one GPU (nccl) or a share of the CPU (gloo). Rank 0 alone writes
files; all ranks agree on one run directory, which rank 0 chooses and broadcasts.
Validation shards the data without padding (``ShardSampler``), so every image counts once.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as tdist

from common.dist import Dist, launched_by_torchrun, local_jobs, task_cpus


def init_distributed() -> Dist:
    """Join the process group torchrun describes (nccl on CUDA, gloo on CPU); a no-op without it."""
    if not launched_by_torchrun():
        return Dist()
    dist = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))
    if not tdist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(dist.local_rank)
        tdist.init_process_group("nccl" if cuda else "gloo")
    return dist


def broadcast(value: Any, dist: Dist) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not dist.enabled:
        return value
    box = [value]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor, dist: Dist) -> torch.Tensor:
    if dist.enabled:
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    return tensor


def barrier(dist: Dist) -> None:
    if dist.enabled:
        tdist.barrier()


def gather_objects(value: Any, dist: Dist) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (``[value]`` in one process)."""
    if not dist.enabled:
        return [value]
    values: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(values, value)
    return values


def agreed_signal(requested: int | None, device: torch.device, dist: Dist, sync: bool = True) -> int | None:
    """The stop signal any rank received (``requested`` is this rank's), one all-reduce: so that
    every rank stops after the same step. Under DDP only at ``sync`` points (None elsewhere)."""
    if not dist.enabled:
        return requested
    if not sync:
        return None
    flag = torch.tensor(requested or 0, device=device)
    tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
    return int(flag.item()) or None


def shutdown_distributed(dist: Dist) -> None:
    if dist.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


def cpu_threads(requested: int | None, num_workers: int) -> int:
    """torch's intra-op threads for this process, chosen with the loader workers.

    Threads and workers share the cores: oversubscribed (2 threads plus 2 workers on 2 cores) a
    training step ran about ten times slower. Unless given (``trainer.num_threads`` or
    OMP_NUM_THREADS), each process (a DDP rank; a job of a local sweep, which all start at once)
    gets its share of the cores minus its loader workers; a SLURM task, the CPUs SLURM gave it.
    """
    if requested is not None:
        return requested
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    if (given := task_cpus()) is not None:  # a SLURM task: its own CPUs
        return max(1, given - num_workers)
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) * local_jobs()
    return max(1, (os.cpu_count() or 1) // processes - num_workers)
