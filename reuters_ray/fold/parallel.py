"""A fold trained by several data-parallel workers: this process's place among them and the few collectives the fold
loop needs (torch.distributed). Ray Train sets the process group up (cv.workers_per_fold); torchrun would as well.
No Ray here. With one worker (no process group) every method returns its input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Group:
    """This process's rank among a fold's `world` workers, and the device collectives use (NCCL's tensors live on
    the GPU, gloo's on the CPU)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def current(cls, device: torch.device) -> Group:
        """The initialized default process group's rank and size; Group() (alone) when there is none."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return cls()
        on = device if dist.get_backend() == "nccl" else torch.device("cpu")
        return cls(dist.get_rank(), dist.get_world_size(), on)

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This worker's rows of a batch: every world-th from position rank (the shards' sizes differ by at most
        one, and each holds short and long texts alike when the batch is length-sorted)."""
        return rows[self.rank :: self.world]

    def sum(self, values: np.ndarray) -> np.ndarray:
        """`values` summed over the workers (all-reduce); same shape and dtype."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.from_numpy(np.ascontiguousarray(values)).to(self.device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def from_rank0(self, flag: bool) -> bool:
        """Rank 0's `flag` on every worker: one decision (stop the fold) that all of them take together."""
        if self.world == 1:
            return flag
        import torch.distributed as dist

        t = torch.tensor([int(flag)], dtype=torch.int64, device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def gather(self, value: Any) -> list[Any]:
        """Every worker's JSON-able `value`, in rank order (sent as JSON text: nothing unpickled)."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8).to(self.device)
        sizes = [torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([len(data)], dtype=torch.int64, device=self.device))
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8, device=self.device)
        padded[: len(data)] = data
        out = [torch.empty(longest, dtype=torch.uint8, device=self.device) for _ in range(self.world)]
        dist.all_gather(out, padded)
        return [json.loads(bytes(o[: int(s.item())].cpu().tolist()).decode()) for o, s in zip(out, sizes)]


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The torch seed of one worker's epoch (dropout): a pure function of (fold seed, epoch, rank), so a fold whose
    workers restart from a checkpoint draws what the undisturbed fold drew."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def run_local(fn: Callable[..., Any], workers: int, *args: Any, threads: int = 1, timeout: float = 600.0) -> list[Any]:
    """fn(*args) in `workers` fresh processes of this machine joined in one gloo process group (what Ray Train's
    workers of a fold are, without Ray: tests, benchmarks, a machine without Ray), each with `threads` torch
    threads; returns each rank's return value, in rank order. `fn` must be importable by name (a module's function).
    Raises RuntimeError with a worker's traceback when one fails, or when they take longer than `timeout` seconds."""
    import multiprocessing as mp
    import queue
    import socket
    import time

    ctx = mp.get_context("spawn")
    with socket.socket() as s:  # a free port for rank 0's store (released before use: a rare race, as Ray's)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    answers = ctx.Queue()
    procs = [
        ctx.Process(target=_local_worker, args=(fn, rank, workers, port, threads, answers, args), daemon=True)
        for rank in range(workers)
    ]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < workers:
            try:
                rank, ok, value = answers.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"local workers: exit codes {[p.exitcode for p in procs]}") from None
                continue
            if not ok:
                raise RuntimeError(f"local worker {rank} failed:\n{value}")
            results[rank] = value
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return [results[r] for r in range(workers)]


def _local_worker(fn, rank: int, world: int, port: int, threads: int, answers, args) -> None:
    import traceback

    import torch.distributed as dist

    torch.set_num_threads(threads)
    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        answers.put((rank, True, fn(*args)))
    except BaseException:  # noqa: BLE001 (sent to the parent, which raises it)
        answers.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
