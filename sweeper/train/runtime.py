"""Where and how a point computes: seed, threads, device, autocast; and its peak memory."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast: Callable[[], AbstractContextManager]  # a fresh context per forward: bf16 on CUDA, or nothing
    bf16: bool = False  # the point computes in bfloat16 (train.dtype=bfloat16 on a CUDA device that has it)


def setup_runtime(train_cfg, local_rank: int = 0, threads: int | None = None) -> Runtime:
    """Seed, threads, device and autocast for this process, from the train section. The threads:
    train.threads, else the launcher's share for this process (`threads`: PointContext), else all cores
    shared out over the point's train.nproc ranks. A rank > 0 of a point on CUDA takes the GPU of
    its local rank."""
    nproc = int(train_cfg.get("nproc", 1) or 1)
    if train_cfg.threads:
        torch.set_num_threads(int(train_cfg.threads))
    elif threads:
        torch.set_num_threads(int(threads))
    elif nproc > 1:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // nproc))
    torch.manual_seed(int(train_cfg.seed))
    name = str(train_cfg.device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and nproc > 1:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    if train_cfg.dtype == "bfloat16" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Runtime(device, lambda: torch.autocast("cuda", dtype=torch.bfloat16), bf16=True)
    return Runtime(device, contextlib.nullcontext)


class PeakMemory:
    """Peak memory of this run: CUDA max allocated, or the peak RSS sampled every 20 ms on CPU
    (ru_maxrss would carry over the peak of earlier points run in the same process)."""

    def __init__(self, device):
        self.device, self.peak_bytes, self._stop = device, 0, threading.Event()

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak_bytes = max(self.peak_bytes, self._rss())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_bytes = self._rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self._rss())

    @property
    def mb(self) -> float:
        return round(self.peak_bytes / 2**20, 1)
