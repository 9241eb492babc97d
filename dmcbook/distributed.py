"""One model trained by several processes: ``torchrun --nproc_per_node=N -m dmcbook train ...``.

torchrun starts N copies of the command with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set.
:func:`init_from_env` joins them into one process group (NCCL on GPUs, gloo on CPUs) and the
:class:`dmcbook.train.Trainer` then wraps the model in DistributedDataParallel, gives each
process its share of every batch (:func:`shard_loader`), sums the metrics over processes and
lets only rank 0 write the run folder. Without torchrun nothing here does anything.
"""
from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world`` processes and its GPU index."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env() -> Context:
    """Join the process group torchrun described in the environment (once); a single process
    gets the trivial context. Each process takes its own GPU, or on CPUs an equal share of the
    cores (N processes with every core each would only contend)."""
    if launched_by_torchrun() and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl")
        else:
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
            if "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
            dist.init_process_group("gloo")
    return current()


def current() -> Context:
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_sum(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``values`` summed over all processes (``values`` itself in a single process)."""
    if not current().active:
        return values
    # NCCL reduces only GPU tensors; gloo only CPU ones.
    values = values.to(device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(values)
    return values


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank: DDP shares them at each training
    forward, but every rank then updates its own from its own images."""
    if current().active:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def barrier() -> None:
    if current().active:
        dist.barrier()


class ShardedBatchSampler:
    """Rank ``rank``'s slice of every batch of ``batch_sampler``.

    Not torch's DistributedSampler: that one deals the shuffled indices out round-robin, so a
    distributed run sees other batches than a single process would. Here every process draws
    the same permutation (the engine reseeds the loader's generator identically on all ranks)
    and takes its part of each global batch, so N processes with batch B/N each train on exactly
    the batches of one process with batch B; the engine's per-epoch reseeding plays the role of
    DistributedSampler.set_epoch.
    """

    def __init__(self, batch_sampler, rank: int, world: int):
        self.batch_sampler, self.rank, self.world = batch_sampler, rank, world

    def __len__(self):
        return len(self.batch_sampler)

    def __iter__(self):
        for batch in self.batch_sampler:
            yield np.array_split(batch, self.world)[self.rank].tolist()


def _offset_worker_seed(rank: int, worker_id: int) -> None:
    """Workers of different ranks would otherwise draw the same augmentations."""
    seed = (torch.initial_seed() + 1_000_003 * rank) % 2 ** 32
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def shard_loader(loader, context: Context):
    """``loader`` for one rank: the same batches as ``loader``, each cut to this rank's part."""
    if not context.active:
        return loader
    if loader.batch_size % context.world:
        raise ValueError(f"the batch size {loader.batch_size} does not split evenly over {context.world} processes; "
                         f"choose a multiple of {context.world}")
    if not isinstance(loader, DataLoader):  # dmcbook.augment.DeviceLoader
        return loader.shard(context.rank, context.world)
    return DataLoader(loader.dataset, batch_sampler=ShardedBatchSampler(loader.batch_sampler, context.rank,
                                                                        context.world),
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      persistent_workers=loader.persistent_workers, generator=loader.generator,
                      worker_init_fn=functools.partial(_offset_worker_seed, context.rank))


def finish() -> None:
    """Leave the process group (at the end of a torchrun command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
