"""The typed wire messages (fowm_core.contract.messages): round trips, byte-identical JSON for
what the stack has always sent, and every bad field, unknown field or oversize text refused with
an error that names it."""

from __future__ import annotations

import json

import pytest

from fowm_core.contract.messages import (
    ABSENT,
    EpisodeEvent,
    WeightsAnnouncement,
    fields_of,
)
from fowm_core.errors import FowmError, MessageError

SHA = "0123456789abcdef" * 4

# What the producers sent before the schema existed (json.dumps(dict, sort_keys=True)): the
# learner's announcement, the planner's live report, the tracker's events, the bag writer's.
LEGACY_WEIGHTS = [
    {"path": "/w/step_00000040.safetensors", "sha256": SHA, "step": 40},
    {"path": "/w/offline.safetensors", "sha256": SHA, "step": None, "live": True, "swaps": 0,
     "node": "fowm_planner"},
    {"path": "ckpt/step_10.safetensors", "step": 10},
]
LEGACY_EVENTS = [
    {"event": "start", "episode": 4, "task": "reach", "seed": 7, "success": False,
     "terminal": False, "steps": 0, "return": 0.0},
    {"event": "end", "episode": 4, "task": "reach", "seed": 7, "success": False,
     "terminal": False, "steps": 3, "return": -4.5, "first_stamp_ns": None,
     "final_stamp_ns": None},
    {"event": "start", "episode": 0, "task": "lift", "seed": 3000009, "noise": 0.3,
     "obj_init_z": 0.0249, "success": False, "terminal": False},
    {"event": "start", "episode": "ep5", "task": "reach", "seed": None, "obj_init_z": None,
     "success": False, "terminal": False},
    {"event": "end", "episode": 0, "task": "lift", "seed": 1, "noise": 0.3, "success": True,
     "terminal": False, "steps": 25, "final_stamp_ns": 5_000_000_000},
    {"event": "start", "episode": 3, "task": "lift", "seed": 11, "success": False,
     "terminal": False, "first_stamp_ns": 10, "final_stamp_ns": 20,
     "synthesized_by": "fowm_recorder"},
]


@pytest.mark.parametrize("body", LEGACY_WEIGHTS)
def test_weights_round_trip_is_byte_identical(body: dict) -> None:
    text = json.dumps(body, sort_keys=True)
    note = WeightsAnnouncement.from_json(text)
    assert note.to_json() == text
    assert WeightsAnnouncement.from_json(note.to_json()) == note
    assert note.is_live == bool(body.get("live"))


@pytest.mark.parametrize("body", LEGACY_EVENTS)
def test_event_round_trip_is_byte_identical(body: dict) -> None:
    text = json.dumps(body, sort_keys=True)
    event = EpisodeEvent.from_json(text)
    assert event.to_json() == text
    assert event.as_dict() == body
    assert EpisodeEvent.from_json(text.encode()) == event          # raw bytes read the same


def test_absent_and_null_differ_and_get_reads_both_as_missing() -> None:
    absent = EpisodeEvent(event="start", episode=1, task="lift")
    null = EpisodeEvent(event="start", episode=1, task="lift", obj_init_z=None)
    assert absent.obj_init_z is ABSENT and "obj_init_z" not in absent.to_json()
    assert '"obj_init_z": null' in null.to_json()
    assert absent.get("obj_init_z") is None and null.get("obj_init_z", 1.5) == 1.5
    assert not ABSENT and repr(ABSENT) == "ABSENT"


# (field, bad value, words the error must hold besides the field name)
BAD_WEIGHTS = [
    ("path", "", "non-empty string"),
    ("path", "x" * 5000, "at most 4096"),
    ("path", 7, "string"),
    ("path", "a\x00b", "string"),
    ("sha256", "abc", "64 lowercase hex"),
    ("sha256", SHA.upper(), "64 lowercase hex"),
    ("step", "abc", "non-negative integer"),
    ("step", -1, "non-negative integer"),
    ("step", 1.5, "integer"),
    ("step", True, "integer"),
    ("step", 2**64, "non-negative integer"),
    ("live", "yes", "true or false"),
    ("swaps", -3, "integer"),
    ("node", "../x", "name"),
    ("task", "li ft", "name"),
    ("obs_mode", "depth", "'state' or 'rgb' or 'all'"),
    ("role", "admin", "'learner' or 'planner-live'"),
    ("sender", "", "non-empty string"),
    ("signature", "zz", "64 lowercase hex"),
]


@pytest.mark.parametrize(("key", "value", "words"), BAD_WEIGHTS)
def test_each_bad_weights_field_is_refused_by_name(key: str, value: object, words: str) -> None:
    body = {"path": "/w/a.safetensors", "sha256": SHA, "step": 1, "live": True, "swaps": 1,
            "node": "fowm_planner", key: value}
    with pytest.raises(MessageError, match=f"field '{key}'") as err:
        WeightsAnnouncement.from_json(json.dumps(body))
    assert words in str(err.value) and repr(value)[:20] in str(err.value)
    assert isinstance(err.value, FowmError)


BAD_EVENTS = [
    ("event", "pause", "'start' or 'end'"),
    ("event", None, "'start' or 'end'"),
    ("episode", -1, "non-negative integer or a name"),
    ("episode", "../../etc", "non-negative integer or a name"),
    ("episode", [1], "non-negative integer or a name"),
    ("task", "li ft", "name"),
    ("task", "x" * 65, "at most 64"),
    ("seed", "7", "non-negative integer"),
    ("seed", -7, "non-negative integer"),
    ("success", 1, "true or false"),
    ("terminal", "false", "true or false"),
    ("steps", 2**40, "integer in"),
    ("return", "1", "finite number"),
    ("obj_init_z", 1e9, "finite number in"),
    ("first_stamp_ns", -5, "non-negative integer"),
    ("final_stamp_ns", 1.0, "integer"),
    ("noise", -0.1, "finite number in"),
    ("synthesized_by", "", "name"),
    ("labelled_by", "robot", "'operator'"),
    ("reward_sources", 3, "non-empty string"),
    ("reward_sources", "x" * 2049, "at most 2048"),
]


@pytest.mark.parametrize(("key", "value", "words"), BAD_EVENTS)
def test_each_bad_event_field_is_refused_by_name(key: str, value: object, words: str) -> None:
    body = {"event": "end", "episode": 2, "task": "lift", "seed": 3, key: value}
    with pytest.raises(MessageError, match=f"field '{key}'") as err:
        EpisodeEvent.from_json(json.dumps(body))
    assert words in str(err.value)


def test_every_field_has_a_bad_value_under_test() -> None:
    assert {k for k, _, _ in BAD_WEIGHTS} == set(fields_of(WeightsAnnouncement))
    assert {k for k, _, _ in BAD_EVENTS} == set(fields_of(EpisodeEvent))


@pytest.mark.parametrize(("text", "words"), [
    ('{"path": "x", "zz": 1}', "unknown field(s) 'zz'"),
    ('{"step": 1}', "lacks the required field 'path'"),
    ("[]", "expected a JSON object"),
    ('"path"', "expected a JSON object"),
    ("step 4", "not JSON"),
    ('{"path": "x", "path": "y"}', "'path' appears twice"),
    ('{"path": "x", "step": NaN}', "NaN"),
    ('{"path": "x", "step": Infinity}', "Infinity"),
    ("[" * 4000 + "]" * 4000, "nests too deeply"),
    ('{"path": "x", "swaps": 1}', "without \"live\": true"),
])
def test_malformed_weights_texts_are_refused(text: str, words: str) -> None:
    with pytest.raises(MessageError) as err:
        WeightsAnnouncement.from_json(text)
    assert words in str(err.value)


def test_oversize_texts_are_refused_before_parsing() -> None:
    huge = json.dumps({"path": "x", "pad": "y" * 10_000})
    with pytest.raises(MessageError, match="bytes: expected at most 8192"):
        WeightsAnnouncement.from_json(huge)
    with pytest.raises(MessageError, match="bytes: expected at most 4096"):
        EpisodeEvent.from_json(" " * 4097)


def test_event_checks_across_fields_and_required_fields() -> None:
    with pytest.raises(MessageError, match="first_stamp_ns 9 after final_stamp_ns 3"):
        EpisodeEvent(event="end", episode=1, task="lift", first_stamp_ns=9, final_stamp_ns=3)
    with pytest.raises(MessageError, match="lacks the required field 'task'"):
        EpisodeEvent.from_json('{"event": "start", "episode": 3, "seed": 42}')
    with pytest.raises(MessageError, match="unknown field"):
        EpisodeEvent.from_json('{"event": "start", "episode": 3, "task": "lift", "x": 1}')


def test_builders_validate_too() -> None:
    with pytest.raises(MessageError, match="field 'return' is nan"):
        EpisodeEvent(event="end", episode=1, task="lift", ret=float("nan"))
    with pytest.raises(MessageError, match="field 'sha256'"):
        WeightsAnnouncement(path="/a", sha256="")


def test_signed_announcements_of_runtime_trust_fit_the_schema() -> None:
    from fowm_core.config import cpu
    from fowm_core.runtime import trust

    key = b"k" * trust.KEY_BYTES
    for role, extra in ((trust.ROLE_LEARNER, {}),
                        (trust.ROLE_PLANNER_LIVE, {"live": True, "swaps": 2, "node": "p"})):
        body = trust.announcement(key, path="/w/a.safetensors", sha256=SHA, step=3,
                                  cfg=cpu("lift", "state"), sender="fowm_learner", role=role,
                                  **extra)
        note = WeightsAnnouncement.from_dict(body)
        assert note.as_dict() == body and note.is_live == (role == trust.ROLE_PLANNER_LIVE)
        assert trust.verify(key, note.as_dict(), note.signature)
