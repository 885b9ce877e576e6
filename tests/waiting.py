"""Helpers the launcher tests share: wait for something a background process does, and count how
many jobs ran at once."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    """predicate()'s first truthy value, polled every `poll` seconds; AssertionError after `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def max_overlap(intervals) -> int:
    """The most (start, end) intervals open at one moment."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak
