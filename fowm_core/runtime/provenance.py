"""Which weights acted in a recorded episode (docs/trust.md, layer 7).

A bag holds the /fowm/weights messages that were on the wire: the learner's announcements and the
planner's {"live": true} reports. Only a live report signed by the planner with the lab key (role
"planner-live", ``trust.authentic_live``) says which weights acted; anything else claiming to be
live is marked forged. fowm_recorder with a key never records a forged live report; a bag
recorded by ``ros2 bag record`` (or a recorder without a key) may hold one, so readers go
through ``weights_that_acted``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rosbags.rosbag2 import Reader

from fowm_core.contract import topics
from fowm_core.contract.messages import WeightsAnnouncement
from fowm_core.data import convert
from fowm_core.errors import FowmError
from fowm_core.runtime.trust import authentic_live


@dataclass(frozen=True)
class WeightsRecord:
    """One /fowm/weights message of a bag."""

    log_ns: int
    message: WeightsAnnouncement | None      # None: not a valid weights message
    authentic: bool | None                   # live reports: signed by the planner? (None: no key)
    error: str = ""

    @property
    def live(self) -> bool:
        return self.message is not None and self.message.is_live

    @property
    def forged(self) -> bool:
        """A live report that does not verify with the lab key."""
        return self.live and self.authentic is False


def weights_records(bag: str | Path, key: bytes | None) -> list[WeightsRecord]:
    """Every /fowm/weights message of ``bag`` in log order, live reports checked with ``key``."""
    out = []
    with Reader(Path(bag)) as reader:
        conns = [c for c in reader.connections if c.topic == topics.WEIGHTS]
        for conn, log_ns, raw in reader.messages(connections=conns):
            try:
                text = convert.TYPESTORE.deserialize_cdr(raw, conn.msgtype).data
                note = WeightsAnnouncement.from_json(text)
            except (FowmError, ValueError, TypeError, AttributeError) as err:
                out.append(WeightsRecord(log_ns, None, None, str(err)))
                continue
            authentic = (authentic_live(key, note.as_dict())
                         if note.is_live and key is not None else None)
            out.append(WeightsRecord(log_ns, note, authentic))
    return out


def weights_that_acted(bag: str | Path, key: bytes) -> list[WeightsAnnouncement]:
    """The planner's authentic live reports in ``bag`` (forged ones left out)."""
    return [r.message for r in weights_records(bag, key)
            if r.live and r.authentic and r.message is not None]
