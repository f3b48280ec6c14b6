"""ArUco markers: the dictionary, printable marker images and which marker sits where.

Every marker is printed on a square plate with a white quiet zone one cell wide around the black
border (what ArUco needs to find the border against a dark or coloured surface), so the marker's
black square is MARKER_FRACTION of the plate. Sizes below are of the black square, the size
solvePnP needs; offsets say how far the point of interest lies behind the marker face, along
the marker's −z (its z axis leaves the printed face):

- object: the cube's centre is ``half the cube side + the plate thickness`` behind any face marker;
- goal: the goal point is ``offset_m`` below the goal plate's face;
- gripper: only for calibration; where it sits on the hand need not be known (hand-eye solves it).

A marker set may also give each marker's full pose in the tracked object's frame (``placements``):
the twin's cube carries one marker per visible face, and with two or more faces in view their
corners are solved together as one rigid body, which is far better conditioned than any single
small, oblique square (docs/perception.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from fowm_core import tasks
from fowm_core.errors import PerceptionError
from fowm_core.perception import geometry

DICTIONARY = "DICT_4X4_50"
MARKER_CELLS = 6                  # a 4×4 code plus its one-cell black border
QUIET_CELLS = 1                   # white margin on each side
MARKER_FRACTION = MARKER_CELLS / (MARKER_CELLS + 2 * QUIET_CELLS)
PLATE_THICKNESS_M = 0.001         # the twin's printed plates (a sticker on a real cube: ~0)

# The twin's marker ids: five cube faces (top, +x, −x, +y, −y of the cube), the goal, the hand.
OBJECT_IDS = (1, 2, 3, 4, 5)
GOAL_ID = 10
GRIPPER_ID = 20
GOAL_PLATE_M = 0.09               # goal plate side (covers the 9.5 cm red disc's middle)
GOAL_LIFT_M = 0.002               # goal plate face above the goal point (above the red disc)
GRIPPER_PLATE_M = 0.10            # calibration plate on the housing's camera-side face


def dictionary(name: str = DICTIONARY) -> cv2.aruco.Dictionary:
    try:
        return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))
    except AttributeError as err:
        msg = (f"ArUco dictionary {name!r} is unknown: expected a cv2.aruco name such as "
               f"DICT_4X4_50 or DICT_5X5_100")
        raise PerceptionError(msg) from err


def plate_image(marker_id: int, cell_px: int = 16, name: str = DICTIONARY) -> np.ndarray:
    """(S, S) uint8 image of a marker plate: the marker with its white quiet zone."""
    d = dictionary(name)
    if not 0 <= marker_id < d.bytesList.shape[0]:
        msg = f"marker id {marker_id} is not in {name} (ids 0..{d.bytesList.shape[0] - 1})"
        raise PerceptionError(msg)
    side = MARKER_CELLS * cell_px
    quiet = QUIET_CELLS * cell_px
    img = np.full((side + 2 * quiet, side + 2 * quiet), 255, np.uint8)
    img[quiet:quiet + side, quiet:quiet + side] = cv2.aruco.generateImageMarker(
        d, marker_id, side, borderBits=1)
    return img


def _rot(axis: int, angle: float) -> np.ndarray:
    """Rotation by ``angle`` (rad, right-handed) about the x (0), y (1) or z (2) axis."""
    i, j = (axis + 1) % 3, (axis + 2) % 3
    c, s = np.cos(angle), np.sin(angle)
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


# Cube faces in OBJECT_IDS order: top, +x, −x, +y, −y; each marker's frame in the cube's frame
# (z out of the face). The twin places its plates with these (fowm_core.sim.markers).
CUBE_FACE_ROTATIONS = (np.eye(3), _rot(1, np.pi / 2), _rot(1, -np.pi / 2), _rot(0, -np.pi / 2),
                       _rot(0, np.pi / 2))


def cube_placements(ids: tuple[int, ...], depth_m: float) -> dict[int, np.ndarray]:
    """T_cube_marker for markers on a cube's faces (ids in CUBE_FACE_ROTATIONS order), each face
    ``depth_m`` from the centre."""
    return {i: geometry.transform(r, r[:, 2] * depth_m)
            for i, r in zip(ids, CUBE_FACE_ROTATIONS, strict=False)}


@dataclass(frozen=True)
class MarkerSet:
    """Markers that locate one thing: their ids, black-square side (m) and where each marker sits
    in the thing's frame (T_thing_marker). Without placements a single marker is ``offset_m``
    in front of the point (the point lies offset_m behind the face, along the marker's −z)."""

    ids: tuple[int, ...]
    marker_m: float
    offset_m: float = 0.0
    placements: dict[int, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if not self.ids or not self.marker_m > 0 or not np.isfinite(self.offset_m):
            msg = (f"marker set ids={self.ids}, marker_m={self.marker_m}, offset_m="
                   f"{self.offset_m} is invalid: expected ids, a side > 0 m and a finite offset")
            raise PerceptionError(msg)
        if self.placements is None and len(self.ids) != 1:
            msg = (f"marker set ids={self.ids}: several markers need their placements on the "
                   f"object (T_object_marker each), e.g. cube_placements(); or use one marker")
            raise PerceptionError(msg)
        if self.placements is not None and set(self.placements) != set(self.ids):
            msg = (f"marker placements {sorted(self.placements)} do not match ids "
                   f"{sorted(self.ids)}; give one T_object_marker per id")
            raise PerceptionError(msg)

    def placement(self, marker_id: int) -> np.ndarray:
        """T_thing_marker."""
        if self.placements is not None:
            return self.placements[marker_id]
        return geometry.transform(np.eye(3), [0.0, 0.0, self.offset_m])


@dataclass(frozen=True)
class Layout:
    """What the tracker looks for: the object's and the goal's markers (None: not tracked)."""

    object: MarkerSet | None
    goal: MarkerSet | None
    dictionary: str = DICTIONARY

    def __post_init__(self) -> None:
        ids = [*(self.object.ids if self.object else ()), *(self.goal.ids if self.goal else ())]
        if len(set(ids)) != len(ids):
            msg = f"marker ids {ids} repeat: the object's and the goal's ids must differ"
            raise PerceptionError(msg)

    def sizes(self) -> dict[int, float]:
        return {i: s.marker_m for s in (self.object, self.goal) if s for i in s.ids}


def object_marker_m(task: str) -> float:
    """The twin cube's marker side: the face's plate less the quiet zone."""
    return 2 * tasks.get(task).object_half_m * MARKER_FRACTION


def twin_layout(task: str) -> Layout:
    """The markers the twin renders for ``task`` (fowm_core.sim.markers). A goal derived from
    the object (lift: the start raised 15 cm) has no marker: nothing marks it on a real table."""
    spec = tasks.get(task)
    obj = goal = None
    if spec.has_object:
        depth = spec.object_half_m + PLATE_THICKNESS_M
        obj = MarkerSet(OBJECT_IDS, object_marker_m(task), depth,
                        cube_placements(OBJECT_IDS, depth))
    if spec.goal_start is not None:
        goal = MarkerSet((GOAL_ID,), GOAL_PLATE_M * MARKER_FRACTION, GOAL_LIFT_M)
    return Layout(obj, goal)
