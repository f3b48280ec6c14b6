"""Approximate-time pairing of observation streams, identical live and offline.

``ApproxTimeSync`` reproduces the Python ``message_filters.ApproximateTimeSynchronizer`` algorithm
(humble/jazzy/rolling share it; docs/platform.md §4), because message_filters has no PyPI wheel
and the planner node (live) and the bag reader (offline) must pair streams the same way:

1. each input keeps a dict ``{stamp_ns: item}``; an equal stamp overwrites; past ``queue_size`` the
   entry with the SMALLEST stamp is evicted (not the oldest arrival);
2. on an arrival at stamp s on input i, every other input offers the stamps with |t − s| ≤ slop
   (inclusive), nearest first (ties keep the queue's insertion order); if one input has none, stop;
3. walk the Cartesian product of those lists in lexicographic order (last list fastest) with s
   put at position i; the first tuple whose spread max − min < slop (strict) and whose stamps
   are all still queued wins; its entries leave every queue, so each message is used at most once.

Only an arrival completes a set, sets may come out of time order, and unmatched items linger until
evicted. Instead of calling a callback under the lock, ``add`` returns the matched tuple.
Deliberate departure: slop is held in integer nanoseconds, rounded (rclpy's Duration truncates);
the two differ by at most 1 ns.

Live, a queue can be poisoned: eviction drops the smallest stamp, so ``queue_size`` items stamped
in the future would evict every real one on arrival, forever. With ``max_ahead_s`` and the
caller's clock (``add(..., now_ns=...)``) an item stamped beyond now + max_ahead_s is refused
(counted in ``refused``) and such items already queued are dropped. Offline (no ``now_ns``) the
algorithm is exactly message_filters'.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from fowm_core.errors import FowmError


class ApproxTimeSync:
    """Pair items from ``num_inputs`` streams by header stamp (message_filters semantics)."""

    def __init__(self, num_inputs: int, queue_size: int, slop_s: float,
                 max_ahead_s: float | None = None) -> None:
        if num_inputs < 1:
            msg = f"num_inputs={num_inputs} is invalid: expected >= 1"
            raise FowmError(msg)
        if queue_size < 1:
            msg = f"queue_size={queue_size} is invalid: expected >= 1"
            raise FowmError(msg)
        if not slop_s > 0:
            msg = (f"slop_s={slop_s} is invalid: expected > 0 (the spread test max - min < slop "
                   "is strict, so slop 0 never matches; use e.g. 0.001 for equal stamps)")
            raise FowmError(msg)
        self.num_inputs = num_inputs
        self.queue_size = queue_size
        self.slop_ns = round(slop_s * 1e9)
        if max_ahead_s is not None and not max_ahead_s >= 0:
            msg = f"max_ahead_s={max_ahead_s} is invalid: expected >= 0 s or None"
            raise FowmError(msg)
        self.max_ahead_ns = None if max_ahead_s is None else round(max_ahead_s * 1e9)
        self.refused = 0
        self._queues: list[dict[int, Any]] = [{} for _ in range(num_inputs)]
        self._lock = threading.Lock()

    def add(self, index: int, stamp_ns: int, item: Any, *,
            now_ns: int | None = None) -> tuple[Any, ...] | None:
        """Queue ``item`` on input ``index``; return a completed set's items in input order.
        ``now_ns`` (live: the caller's clock) enables the future-stamp guard (module docstring)."""
        if not 0 <= index < self.num_inputs:
            msg = f"input index {index} is out of range: this synchronizer has {self.num_inputs}"
            raise FowmError(msg)
        stamp_ns = int(stamp_ns)
        with self._lock:
            if now_ns is not None and self.max_ahead_ns is not None:
                horizon = int(now_ns) + self.max_ahead_ns
                for q in self._queues:
                    for stamp in [s for s in q if s > horizon]:
                        del q[stamp]
                if stamp_ns > horizon:
                    self.refused += 1
                    return None
            queue = self._queues[index]
            queue[stamp_ns] = item
            while len(queue) > self.queue_size:
                del queue[min(queue)]
            stamps = self._find_set(index, stamp_ns)
            if stamps is None:
                return None
            matched = tuple(q.pop(s) for q, s in zip(self._queues, stamps, strict=True))
        return matched

    def _find_set(self, index: int, stamp_ns: int) -> tuple[int, ...] | None:
        candidates: list[list[int]] = []
        for other, queue in enumerate(self._queues):
            if other == index:
                continue
            near = [s for s in queue if abs(s - stamp_ns) <= self.slop_ns]
            if not near:
                return None
            # sorted() is stable: equal distances keep the dict's insertion order, as upstream.
            candidates.append(sorted(near, key=lambda s: abs(s - stamp_ns)))
        for combo in itertools.product(*candidates):
            stamps = (*combo[:index], stamp_ns, *combo[index:])
            if max(stamps) - min(stamps) >= self.slop_ns:
                continue
            # The arrival itself may already have been evicted (it had the smallest stamp).
            if all(s in q for q, s in zip(self._queues, stamps, strict=True)):
                return stamps
        return None

    def pending(self) -> list[list[int]]:
        """The queued stamps of every input, ascending (for diagnostics and tests)."""
        with self._lock:
            return [sorted(q) for q in self._queues]

    def clear(self) -> None:
        with self._lock:
            for queue in self._queues:
                queue.clear()
