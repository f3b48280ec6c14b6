"""ApproxTimeSync against message_filters' ApproximateTimeSynchronizer rules
(docs/platform.md §4)."""

from __future__ import annotations

import threading

import pytest

from fowm_core.data.sync import ApproxTimeSync
from fowm_core.errors import FowmError

MS = 1_000_000   # stamps below are written in ms for reading; the class works in ns


def test_equal_stamps_match_in_input_order() -> None:
    sync = ApproxTimeSync(3, queue_size=5, slop_s=0.001)
    assert sync.add(2, 10 * MS, "c") is None
    assert sync.add(0, 10 * MS, "a") is None
    assert sync.add(1, 10 * MS, "b") == ("a", "b", "c")
    assert sync.pending() == [[], [], []]


def test_queue_evicts_smallest_stamp_not_oldest_arrival() -> None:
    sync = ApproxTimeSync(2, queue_size=2, slop_s=0.005)
    sync.add(0, 30 * MS, "a30")
    sync.add(0, 10 * MS, "a10")
    sync.add(0, 20 * MS, "a20")          # arrives last, but 10 is the smallest and goes
    assert sync.pending()[0] == [20 * MS, 30 * MS]
    assert sync.add(1, 10 * MS, "b10") is None
    assert sync.add(1, 20 * MS, "b20") == ("a20", "b20")


def test_arrival_evicted_on_entry_never_matches() -> None:
    sync = ApproxTimeSync(2, queue_size=2, slop_s=0.005)
    sync.add(1, 5 * MS, "b5")
    sync.add(0, 20 * MS, "a20")
    sync.add(0, 30 * MS, "a30")
    # Full queue: the new, smallest stamp is evicted at once, so b5 stays unmatched.
    assert sync.add(0, 5 * MS, "a5") is None
    assert sync.pending() == [[20 * MS, 30 * MS], [5 * MS]]


def test_spread_must_be_strictly_below_slop() -> None:
    sync = ApproxTimeSync(2, queue_size=5, slop_s=0.005)
    sync.add(0, 100 * MS, "a")
    # |t - s| == slop: a candidate (inclusive), but the spread test (strict) rejects it.
    assert sync.add(1, 105 * MS, "b_at_slop") is None
    assert sync.add(1, 105 * MS - 1, "b_inside") == ("a", "b_inside")


def test_lexicographic_walk_takes_first_tuple_within_slop() -> None:
    sync = ApproxTimeSync(3, queue_size=5, slop_s=0.005)
    sync.add(1, 97 * MS, "b97")
    sync.add(1, 104 * MS, "b104")
    sync.add(2, 103 * MS, "c103")
    # Candidates of input 1 nearest first: 97 (3 ms), 104 (4 ms). (97, 103) spreads 6 ms and
    # fails; (104, 103) spreads 4 ms and wins, although 97 is nearer to the arrival.
    assert sync.add(0, 100 * MS, "a100") == ("a100", "b104", "c103")
    assert sync.pending() == [[], [97 * MS], []]


@pytest.mark.parametrize(("first", "second", "winner"), [(98, 102, "b98"), (102, 98, "b102")])
def test_equal_distances_keep_insertion_order(first: int, second: int, winner: str) -> None:
    sync = ApproxTimeSync(3, queue_size=5, slop_s=0.005)
    sync.add(1, first * MS, f"b{first}")
    sync.add(1, second * MS, f"b{second}")
    sync.add(2, 101 * MS, "c101")
    assert sync.add(0, 100 * MS, "a100") == ("a100", winner, "c101")


def test_each_message_is_used_once() -> None:
    sync = ApproxTimeSync(2, queue_size=5, slop_s=0.005)
    sync.add(0, 100 * MS, "a")
    assert sync.add(1, 100 * MS, "b1") == ("a", "b1")
    assert sync.add(1, 101 * MS, "b2") is None          # "a" is gone
    assert sync.add(0, 102 * MS, "a2") == ("a2", "b2")


def test_out_of_order_arrivals_complete_sets_out_of_time_order() -> None:
    sync = ApproxTimeSync(2, queue_size=5, slop_s=0.002)
    sync.add(0, 200 * MS, "a200")
    sync.add(0, 100 * MS, "a100")
    assert sync.add(1, 100 * MS, "b100") == ("a100", "b100")
    assert sync.add(1, 200 * MS, "b200") == ("a200", "b200")


def test_equal_stamp_overwrites() -> None:
    sync = ApproxTimeSync(2, queue_size=5, slop_s=0.001)
    sync.add(0, 7 * MS, "old")
    sync.add(0, 7 * MS, "new")
    assert sync.add(1, 7 * MS, "b") == ("new", "b")


def test_concurrent_adds_use_every_message_once() -> None:
    sync = ApproxTimeSync(2, queue_size=2000, slop_s=0.0001)
    matches: list[tuple] = []
    lock = threading.Lock()

    def feed(index: int, stamps: range) -> None:
        for s in stamps:
            out = sync.add(index, s * MS, (index, s))
            if out is not None:
                with lock:
                    matches.append(out)

    threads = [threading.Thread(target=feed, args=(i, range(k, 1000, 2)))
               for i in (0, 1) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(matches) == 1000
    assert sorted(a[1] for a, _ in matches) == list(range(1000))
    assert all(a[1] == b[1] for a, b in matches)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(FowmError, match="slop_s=0"):
        ApproxTimeSync(2, 5, 0.0)
    with pytest.raises(FowmError, match="out of range"):
        ApproxTimeSync(2, 5, 0.01).add(2, 0, "x")


def test_future_stamps_cannot_poison_a_queue_given_the_clock() -> None:
    now, ahead = 1_000_000_000, 100_000_000_000
    # Without a clock (offline, message_filters semantics) queue_size future stamps evict every
    # real one on arrival: the poisoning that the live guard prevents.
    plain = ApproxTimeSync(2, 3, 0.01)
    for k in range(3):
        plain.add(1, now + ahead + k, "future")
    assert plain.add(1, now, "real") is None and plain.add(0, now, "anchor") is None
    guarded = ApproxTimeSync(2, 3, 0.01, max_ahead_s=0.5)
    for k in range(3):
        assert guarded.add(1, now + ahead + k, "future", now_ns=now) is None
    assert guarded.refused == 3 and guarded.pending() == [[], []]
    guarded.add(1, now, "real", now_ns=now)
    assert guarded.add(0, now, "anchor", now_ns=now) == ("anchor", "real")
    # Items queued without a clock (sim time unset) leave once a clock shows they are ahead.
    guarded.add(1, now + ahead, "early")
    guarded.add(0, now + 5, "x", now_ns=now)
    assert guarded.pending() == [[now + 5], []]
    with pytest.raises(FowmError, match="max_ahead_s"):
        ApproxTimeSync(2, 3, 0.01, max_ahead_s=-1.0)
