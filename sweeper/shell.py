"""Asking other programs (sacct, squeue, scontrol, nvidia-smi, git): one quiet way to do it."""

from __future__ import annotations

import subprocess


def output(cmd: list[str], timeout: float = 30) -> str | None:
    """stdout of `cmd`, or None when it is missing, times out or exits non-zero (the caller says what that means)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
