"""The JSON wire messages of the topic contract, one typed definition each (docs/design.md).

``WeightsAnnouncement`` travels on /fowm/weights (the learner's {path, sha256, step}, and the
planner's own {"live": true, ..., swaps, node}); ``EpisodeEvent`` on /fowm/episode. Every builder
calls ``to_json()`` and every reader ``from_json(text)``, which checks the whole message (size,
JSON, each field's type and range, unknown fields) and raises ``MessageError`` naming the field,
the value seen and what was expected. A hostile message on a latched topic must not reach code
that assumes the schema, so nothing here trusts its input.

Optional fields distinguish "absent" (``ABSENT``: not written) from ``None`` (written as null):
bags written before this module hold both forms, and their bytes must not change.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from fowm_core.errors import MessageError


class Absent(enum.Enum):
    """A field that is not in the message (as opposed to one that is null)."""

    ABSENT = "absent"

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = Absent.ABSENT
MAX_STAMP_NS = 2**63 - 1
MAX_PATH_CHARS = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Names end up in bag file names (task, episode): no path separators, no leading dot.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EPISODE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


# -- field checks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """How one field is checked: ``kind`` int|float|bool|str|hex64|name|episode|choice."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    max_len: int = 0
    choices: tuple[str, ...] = ()
    nullable: bool = False
    required: bool = False
    key: str = ""                 # the JSON key when it differs from the attribute name


def _spec(kind: str, **kw: Any) -> dict[str, Spec]:
    return {"spec": Spec(kind, **kw)}


def _describe(spec: Spec) -> str:
    what = {"int": "an integer", "float": "a finite number", "bool": "true or false",
            "str": f"a non-empty string of at most {spec.max_len} characters",
            "hex64": "64 lowercase hex characters (a SHA-256)",
            "name": f"a name ([A-Za-z_][A-Za-z0-9_]*) of at most {spec.max_len} characters",
            "episode": ("a non-negative integer or a name ([A-Za-z0-9_][A-Za-z0-9_-]*) of at "
                        "most 128 characters"),
            "choice": " or ".join(repr(c) for c in spec.choices)}[spec.kind]
    if spec.lo == 0 and spec.hi is not None and spec.hi >= MAX_STAMP_NS:
        what = what.replace("an integer", "a non-negative integer (int64)")
    elif spec.lo is not None and spec.hi is not None:
        what += f" in [{spec.lo:g}, {spec.hi:g}]"
    return what + (" or null" if spec.nullable else "")


def _ok(spec: Spec, value: Any) -> bool:
    if value is None:
        return spec.nullable
    kind = spec.kind
    if kind == "bool":
        return isinstance(value, bool)
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float)):
            return False
        if kind == "float" and not math.isfinite(value):
            return False
        return ((spec.lo is None or value >= spec.lo) and (spec.hi is None or value <= spec.hi))
    if kind == "episode":
        if isinstance(value, int) and not isinstance(value, bool):
            return 0 <= value <= MAX_STAMP_NS
        return isinstance(value, str) and len(value) <= 128 and bool(_EPISODE.fullmatch(value))
    if not isinstance(value, str):
        return False
    if kind == "hex64":
        return bool(_HEX64.fullmatch(value))
    if kind == "choice":
        return value in spec.choices
    if len(value) > spec.max_len or (kind == "name" and not _NAME.fullmatch(value)):
        return False
    return kind != "str" or (len(value) > 0 and "\x00" not in value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- the base ------------------------------------------------------------------------------------
class WireMessage:
    """Base of the JSON messages: validation on construction, canonical JSON out, strict in."""

    MAX_BYTES: ClassVar[int] = 4096
    NAME: ClassVar[str] = "message"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            spec: Spec = f.metadata["spec"]
            if value is ABSENT:
                if spec.required:
                    msg = f"{self.NAME} lacks the required field {_key(f)!r}"
                    raise MessageError(msg)
                continue
            if not _ok(spec, value):
                msg = (f"{self.NAME} field {_key(f)!r} is {_shown(value)}: expected "
                       f"{_describe(spec)}")
                raise MessageError(msg)
        self._check()

    def _check(self) -> None:
        """Checks across fields (subclasses)."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON object: present fields under their JSON keys."""
        return {_key(f): getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if getattr(self, f.name) is not ABSENT}

    def to_json(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, allow_nan=False)
        if len(text.encode()) > self.MAX_BYTES:
            msg = (f"{self.NAME} is {len(text.encode())} bytes as JSON: expected at most "
                   f"{self.MAX_BYTES}; shorten its strings")
            raise MessageError(msg)
        return text

    def get(self, name: str, default: Any = None) -> Any:
        """An attribute, ``default`` when it is absent or null (for optional fields)."""
        value = getattr(self, name)
        return default if value is ABSENT or value is None else value

    @classmethod
    def from_dict(cls, body: Any) -> Self:
        """Check a decoded JSON object; unknown or missing fields are errors."""
        if not isinstance(body, dict):
            msg = (f"{cls.NAME} is {type(body).__name__} {_shown(body)}: expected a JSON object "
                   f"with fields {', '.join(cls.json_keys())}")
            raise MessageError(msg)
        by_key = {_key(f): f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(str(k) for k in body if k not in by_key)
        if unknown:
            msg = (f"{cls.NAME} has unknown field(s) {', '.join(map(repr, unknown))}: expected "
                   f"only {', '.join(cls.json_keys())}")
            raise MessageError(msg)
        return cls(**{by_key[k]: v for k, v in body.items()})

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        if isinstance(text, bytes | bytearray):
            text = bytes(text).decode("utf-8", errors="replace")
        if not isinstance(text, str):
            msg = f"{cls.NAME} is a {type(text).__name__}: expected JSON text"
            raise MessageError(msg)
        size = len(text.encode("utf-8", errors="replace"))
        if size > cls.MAX_BYTES:
            msg = f"{cls.NAME} is {size} bytes: expected at most {cls.MAX_BYTES}; refused unread"
            raise MessageError(msg)
        try:
            body = json.loads(text, object_pairs_hook=_no_duplicates,
                              parse_constant=_no_constant)
        except RecursionError as err:
            msg = f"{cls.NAME} {_shown(text)} nests too deeply: expected a flat JSON object"
            raise MessageError(msg) from err
        except MessageError as err:
            msg = f"{cls.NAME} {_shown(text)}: {err}"
            raise MessageError(msg) from err
        except ValueError as err:
            msg = f"{cls.NAME} is not JSON ({err}): {_shown(text)}"
            raise MessageError(msg) from err
        return cls.from_dict(body)

    @classmethod
    def json_keys(cls) -> list[str]:
        return [_key(f) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


def _key(f: dataclasses.Field[Any]) -> str:
    return f.metadata["spec"].key or f.name


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, value in pairs:
        if key in body:
            msg = f"field {key!r} appears twice: expected each field once"
            raise MessageError(msg)
        body[key] = value
    return body


def _no_constant(name: str) -> Any:
    msg = f"a field is {name}: expected a finite number (NaN and infinities are not JSON)"
    raise MessageError(msg)


# -- /fowm/weights --------------------------------------------------------------------------------
OBS_MODES = ("state", "rgb", "all")
ROLES = ("learner", "planner-live")      # runtime.trust.ROLES


@dataclass(frozen=True)
class WeightsAnnouncement(WireMessage):
    """A checkpoint on /fowm/weights: the learner's announcement {path, sha256, step}, or the
    planner's report of the weights it plans with ({"live": true, ..., swaps, node}); signed
    ones (runtime.trust.announcement) add task, obs_mode, role, sender and signature."""

    NAME: ClassVar[str] = "weights message"
    MAX_BYTES: ClassVar[int] = 8192

    path: str = field(default=ABSENT, metadata=_spec("str", max_len=MAX_PATH_CHARS, required=True))  # type: ignore[assignment]
    sha256: str | Absent = field(default=ABSENT, metadata=_spec("hex64"))
    step: int | Absent | None = field(default=ABSENT, metadata=_spec(
        "int", lo=0, hi=MAX_STAMP_NS, nullable=True))
    live: bool | Absent = field(default=ABSENT, metadata=_spec("bool"))
    swaps: int | Absent = field(default=ABSENT, metadata=_spec("int", lo=0, hi=MAX_STAMP_NS))
    node: str | Absent = field(default=ABSENT, metadata=_spec("name", max_len=256))
    # Signed announcements (fowm_core.runtime.trust, docs/trust.md): labels and the HMAC.
    task: str | Absent = field(default=ABSENT, metadata=_spec("name", max_len=64))
    obs_mode: str | Absent = field(default=ABSENT, metadata=_spec("choice", choices=OBS_MODES))
    role: str | Absent = field(default=ABSENT, metadata=_spec("choice", choices=ROLES))
    sender: str | Absent = field(default=ABSENT, metadata=_spec("str", max_len=256))
    signature: str | Absent = field(default=ABSENT, metadata=_spec("hex64"))

    def _check(self) -> None:
        if self.live is not True:
            extra = [k for k in ("swaps", "node") if getattr(self, k) is not ABSENT]
            if extra:
                msg = (f"{self.NAME} has {', '.join(extra)} without \"live\": true: only the "
                       "planner's live report carries them")
                raise MessageError(msg)

    @property
    def is_live(self) -> bool:
        """The planner's own report (not an offer to validate)."""
        return self.live is True


# -- /fowm/episode --------------------------------------------------------------------------------
EVENT_KINDS = ("start", "end")
LABELLERS = ("operator",)


@dataclass(frozen=True)
class EpisodeEvent(WireMessage):
    """An episode's start or end on /fowm/episode (bags.py has the layout the stamps refer to)."""

    NAME: ClassVar[str] = "episode event"

    event: str = field(default=ABSENT, metadata=_spec("choice", choices=EVENT_KINDS, required=True))  # type: ignore[assignment]
    episode: int | str = field(default=ABSENT, metadata=_spec("episode", required=True))  # type: ignore[assignment]
    task: str = field(default=ABSENT, metadata=_spec("name", max_len=64, required=True))  # type: ignore[assignment]
    seed: int | Absent | None = field(default=ABSENT, metadata=_spec(
        "int", lo=0, hi=MAX_STAMP_NS, nullable=True))
    success: bool | Absent = field(default=ABSENT, metadata=_spec("bool"))
    terminal: bool | Absent = field(default=ABSENT, metadata=_spec("bool"))
    steps: int | Absent = field(default=ABSENT, metadata=_spec("int", lo=0, hi=2**31 - 1))
    ret: float | Absent = field(default=ABSENT, metadata=_spec("float", key="return"))
    obj_init_z: float | Absent | None = field(default=ABSENT, metadata=_spec(
        "float", lo=-1e3, hi=1e3, nullable=True))
    first_stamp_ns: int | Absent | None = field(default=ABSENT, metadata=_spec(
        "int", lo=0, hi=MAX_STAMP_NS, nullable=True))
    final_stamp_ns: int | Absent | None = field(default=ABSENT, metadata=_spec(
        "int", lo=0, hi=MAX_STAMP_NS, nullable=True))
    noise: float | Absent = field(default=ABSENT, metadata=_spec("float", lo=0.0, hi=1e3))
    synthesized_by: str | Absent = field(default=ABSENT, metadata=_spec("name", max_len=256))
    # Real mode (docs/rewards.md): "operator" when ``success`` is the operator's label_success
    # answer, and which source scored each step, run-length coded (data.labels.encode_sources).
    labelled_by: str | Absent = field(default=ABSENT, metadata=_spec(
        "choice", choices=LABELLERS))
    reward_sources: str | Absent = field(default=ABSENT, metadata=_spec("str", max_len=2048))

    def _check(self) -> None:
        first, final = self.get("first_stamp_ns"), self.get("final_stamp_ns")
        if first is not None and final is not None and first > final:
            msg = (f"{self.NAME} has first_stamp_ns {first} after final_stamp_ns {final}: "
                   "expected first <= final")
            raise MessageError(msg)

    @property
    def is_start(self) -> bool:
        return self.event == "start"


def fields_of(message: type[WireMessage]) -> dict[str, Spec]:
    """JSON key → its check (documentation and tests)."""
    return {_key(f): f.metadata["spec"] for f in dataclasses.fields(message)}  # type: ignore[arg-type]
