"""Several processes, on one machine or many: what a torchrun launch needs.

`torchrun --nproc_per_node N -m stvsr_cli upscale IN OUT` starts N copies
of the command. Each learns its place from the environment torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK) and talks to the others over gloo, which
runs on CPUs and between machines alike; the processes only exchange a few
small messages (the list of segments to do, and whether each succeeded),
never frames, so gloo is enough even when every process has a GPU. Frames
go through the shared file system: each process writes its own segments
into the run's work folder, and rank 0 joins them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Sequence, TypeVar

from .errors import StvsrError

T = TypeVar("T")

# A collective waits for the slowest process, which may be hours of
# upscaling away; gloo's default of 30 minutes would end the run.
_TIMEOUT = timedelta(days=30)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one launch (rank 0 of 1
    when run alone, which makes every method a no-op)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> str:
        """Each process on a machine takes its own GPU: 'auto' and 'cuda'
        become cuda:LOCAL_RANK there."""
        if self.world == 1 or device not in ("auto", "cuda"):
            return device
        import torch

        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu" if device == "auto" else device

    def share(self, make: Callable[[], T]) -> T:
        """Rank 0 calls `make` and every process gets its result; when it
        raises, every process raises the same StvsrError."""
        if self.world == 1:
            return make()
        import torch.distributed as dist

        message: list = [None, None]
        if self.leader:
            try:
                message = [make(), None]
            except StvsrError as error:
                message = [None, str(error)]
            except BaseException as error:
                dist.broadcast_object_list([None, f"process 0 failed: {error}"], src=0)
                raise
        dist.broadcast_object_list(message, src=0)
        if message[1] is not None:
            raise StvsrError(message[1])
        return message[0]

    def gather(self, value: T) -> list[T]:
        """Every process's `value`, in rank order, on every process."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        values: list = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def split(self, items: Sequence[T]) -> list[T]:
        """This process's share: a contiguous run of `items` (each process
        plans the frames before its share, so fewer, longer runs waste less)."""
        per, extra = divmod(len(items), self.world)
        start = self.rank * per + min(self.rank, extra)
        return list(items[start:start + per + (self.rank < extra)])

    def deal(self, items: Sequence[T]) -> list[T]:
        """This process's share, dealt round-robin: for independent jobs
        (the inputs of a batch), so that early ones finish early."""
        return list(items[self.rank::self.world])


def from_environment() -> Ranks:
    """The launch this process belongs to: torchrun's environment, with the
    gloo process group started; rank 0 of 1 without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=_TIMEOUT)
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def finish(ranks: Ranks) -> None:
    """Close the process group, so every process exits cleanly."""
    if ranks.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
