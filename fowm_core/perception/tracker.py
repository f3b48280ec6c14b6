"""Marker detection and poses: cv2.aruco's ArucoDetector, then cv2.solvePnP (IPPE_SQUARE) per
marker with the camera's intrinsics, then the camera extrinsics into link_base.

A marker whose white margin is not light all around (partly hidden: it may still decode, with
corners pixels off) or whose reprojection error exceeds ``max_reproj_px`` is dropped: no pose is
better than a wrong one (a lost marker publishes nothing; the consumers hold or leave the step
unscored). Several visible markers of one object (faces of a cube, MarkerSet.placements) are
solved together: their corners are points of one rigid body, which removes the depth and tilt
ambiguity a single small, oblique square suffers from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from fowm_core.errors import PerceptionError
from fowm_core.perception import geometry
from fowm_core.perception.markers import MARKER_CELLS, Layout, MarkerSet, dictionary

DEFAULT_MAX_REPROJ_PX = 2.0
# cv2.aruco corner refinements. APRILTAG places corners best but misses a few more small markers,
# so the default runs it first and lets SUBPIX add the markers it missed (the twin's numbers
# for both and each alone: docs/results/tracker_twin.json, "variants").
REFINEMENTS = ("NONE", "SUBPIX", "CONTOUR", "APRILTAG")
DEFAULT_REFINEMENT = "APRILTAG,SUBPIX"


@dataclass(frozen=True)
class Detection:
    """One marker: id, its 4 image corners, T_camera_marker and its RMS reprojection error."""

    marker_id: int
    corners: np.ndarray
    t_cam_marker: np.ndarray
    reproj_px: float
    refinement_pass: int = 0        # which of the detector's refinements found it (0: first)

    @property
    def area_px(self) -> float:
        return float(cv2.contourArea(self.corners.astype(np.float32)))


@dataclass(frozen=True)
class Pose:
    """A tracked point in link_base: position (3,) m, orientation (x, y, z, w) of the marker
    frame it came from, and which markers gave it."""

    position: np.ndarray
    quat_xyzw: np.ndarray
    marker_ids: tuple[int, ...]


@dataclass
class Frame:
    """What one image gave: the poses (None when not seen) and every accepted detection."""

    object: Pose | None = None
    goal: Pose | None = None
    detections: list[Detection] = field(default_factory=list)
    rejected: int = 0

    @property
    def reproj_px(self) -> float | None:
        if not self.detections:
            return None
        return float(np.mean([d.reproj_px for d in self.detections]))


def marker_corners_3d(side_m: float) -> np.ndarray:
    """The marker's corners in its own frame, in the order SOLVEPNP_IPPE_SQUARE requires (and
    ArUco returns): top-left, top-right, bottom-right, bottom-left; z out of the printed face."""
    h = side_m / 2
    return np.array([[-h, h, 0], [h, h, 0], [h, -h, 0], [-h, -h, 0]], dtype=np.float64)


def _ring(offset: float) -> np.ndarray:
    """Points (in marker cells, 0..MARKER_CELLS across the black square) along the four edges,
    ``offset`` cells outside (negative: inside) the square's outline."""
    n = MARKER_CELLS
    t = np.linspace(0.5, n - 0.5, 2 * n)
    lo, hi = -offset, n + offset
    return np.concatenate([np.column_stack([t, np.full_like(t, lo)]),
                           np.column_stack([t, np.full_like(t, hi)]),
                           np.column_stack([np.full_like(t, lo), t]),
                           np.column_stack([np.full_like(t, hi), t])]).astype(np.float32)


QUIET_RING = _ring(0.5)       # the middle of the white margin around the marker
BORDER_RING = _ring(-0.5)     # the middle of the marker's black border


MIN_CELL_PX = 4.0             # a margin thinner than this in the image is not judged


def margin_visible(gray: np.ndarray, corners: np.ndarray) -> bool:
    """True when the white margin around the marker is light wherever it can be judged: a
    marker partly hidden (a finger across its edge) still decodes, but its corners are wrong by
    pixels, which at this size is centimetres. Every margin sample must be nearer the margin's
    brightness than the border's; edges seen so obliquely that a cell spans under MIN_CELL_PX
    pixels are skipped (their margin blends with the surface around it)."""
    n = MARKER_CELLS
    square = np.array([[0, 0], [n, 0], [n, n], [0, n]], dtype=np.float32)
    h = cv2.getPerspectiveTransform(square, corners.astype(np.float32))
    quiet = cv2.perspectiveTransform(QUIET_RING[None], h)[0]
    border = cv2.perspectiveTransform(BORDER_RING[None], h)[0]
    judged = np.linalg.norm(quiet - border, axis=1) >= MIN_CELL_PX

    def sample(uv: np.ndarray) -> np.ndarray:
        x = np.clip(np.round(uv[:, 0]).astype(int), 0, gray.shape[1] - 1)
        y = np.clip(np.round(uv[:, 1]).astype(int), 0, gray.shape[0] - 1)
        return gray[y, x].astype(np.float64)

    light, dark = np.median(sample(quiet)), np.median(sample(border))
    if not judged.any() or light - dark <= 20:
        return bool(light - dark > 20)
    return bool(sample(quiet[judged]).min() > (light + dark) / 2)


def to_gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        msg = f"image must be uint8 (H, W) or (H, W, 3) RGB; got {img.dtype} {img.shape}"
        raise PerceptionError(msg)
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


class MarkerDetector:
    """ArUco detection with refined corners, and one IPPE_SQUARE pose per known marker.
    ``refinement``: one of REFINEMENTS, or several comma-separated: each detector in turn adds
    the markers the ones before it missed."""

    def __init__(self, sizes: dict[int, float], dictionary_name: str,
                 max_reproj_px: float = DEFAULT_MAX_REPROJ_PX,
                 refinement: str = DEFAULT_REFINEMENT, check_margin: bool = True) -> None:
        self.check_margin = check_margin
        methods = [m.strip() for m in refinement.split(",")]
        if not all(m in REFINEMENTS for m in methods):
            msg = (f"corner refinement {refinement!r} is unknown: expected one of {REFINEMENTS} "
                   f"or several, comma-separated (default {DEFAULT_REFINEMENT})")
            raise PerceptionError(msg)
        self._detectors = []
        for method in methods:
            params = cv2.aruco.DetectorParameters()
            params.cornerRefinementMethod = getattr(cv2.aruco, f"CORNER_REFINE_{method}")
            self._detectors.append(cv2.aruco.ArucoDetector(dictionary(dictionary_name), params))
        self.sizes = dict(sizes)
        self.max_reproj_px = max_reproj_px

    def detect(self, image: np.ndarray, intr: geometry.Intrinsics) -> tuple[list[Detection], int]:
        """(accepted detections, number rejected by the reprojection check)."""
        gray = to_gray(image)
        if gray.shape != (intr.height, intr.width):
            msg = (f"image is {gray.shape[1]}x{gray.shape[0]} but the CameraInfo is "
                   f"{intr.width}x{intr.height}; publish both from the same stream")
            raise PerceptionError(msg)
        found: dict[int, tuple[int, np.ndarray]] = {}
        for index, detector in enumerate(self._detectors):
            if set(self.sizes) <= set(found):
                break
            corners, ids, _ = detector.detectMarkers(gray)
            for c, marker_id in zip(corners, () if ids is None else ids.reshape(-1), strict=True):
                if int(marker_id) in self.sizes:
                    found.setdefault(int(marker_id), (index, c.reshape(4, 2).astype(np.float64)))
        out: list[Detection] = []
        rejected = 0
        k, dist = intr.matrix(), intr.dist_coeffs()
        for marker_id, (index, c) in sorted(found.items()):
            if self.check_margin and not margin_visible(gray, c):
                rejected += 1
                continue
            det = _pose(marker_id, c, self.sizes[marker_id], k, dist, index)
            if det is None or not det.reproj_px <= self.max_reproj_px:
                rejected += 1
                continue
            out.append(det)
        return out, rejected


def _pose(marker_id: int, corners: np.ndarray, side: float, k: np.ndarray,
          dist: np.ndarray, refinement_pass: int = 0) -> Detection | None:
    obj = marker_corners_3d(side)
    ok, rvec, tvec = cv2.solvePnP(obj, corners, k, dist, flags=cv2.SOLVEPNP_IPPE_SQUARE)
    if not ok or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()) or tvec[2, 0] <= 0:
        return None
    projected, _ = cv2.projectPoints(obj, rvec, tvec, k, dist)
    err = float(np.sqrt(np.mean(np.sum((projected.reshape(4, 2) - corners) ** 2, axis=1))))
    rot, _ = cv2.Rodrigues(rvec)
    return Detection(marker_id, corners, geometry.transform(rot, tvec.reshape(3)), err,
                     refinement_pass)


class MarkerTracker:
    """Object and goal poses in link_base from one image (``track``)."""

    def __init__(self, layout: Layout, t_base_cam: np.ndarray,
                 max_reproj_px: float = DEFAULT_MAX_REPROJ_PX,
                 refinement: str = DEFAULT_REFINEMENT, check_margin: bool = True) -> None:
        self.layout = layout
        self.t_base_cam = np.asarray(t_base_cam, dtype=np.float64)
        if self.t_base_cam.shape != (4, 4) or not np.isfinite(self.t_base_cam).all():
            msg = f"camera extrinsics must be a finite 4x4 transform; got {self.t_base_cam.shape}"
            raise PerceptionError(msg)
        self.detector = MarkerDetector(layout.sizes(), layout.dictionary, max_reproj_px,
                                       refinement, check_margin)
        self._intr: geometry.Intrinsics | None = None

    def track(self, image: np.ndarray, intr: geometry.Intrinsics) -> Frame:
        detections, rejected = self.detector.detect(image, intr)
        self._intr = intr
        return Frame(self._locate(self.layout.object, detections),
                     self._locate(self.layout.goal, detections), detections, rejected)

    def _locate(self, markers: MarkerSet | None, detections: list[Detection]) -> Pose | None:
        if markers is None:
            return None
        seen = [d for d in detections if d.marker_id in markers.ids]
        if not seen:
            return None
        # Markers of the most accurate refinement that found any: a later pass's corners
        # would only pull the joint solve away from better ones.
        first = min(d.refinement_pass for d in seen)
        seen = [d for d in seen if d.refinement_pass == first]
        # The largest marker's own pose starts it; two or more markers refine it jointly.
        best = max(seen, key=lambda d: d.area_px)
        t_cam_thing = best.t_cam_marker @ geometry.invert(markers.placement(best.marker_id))
        if len(seen) > 1:
            joint = self._joint(markers, seen, t_cam_thing)
            if joint is None:
                return None
            t_cam_thing = joint
        t_base_thing = self.t_base_cam @ t_cam_thing
        return Pose(t_base_thing[:3, 3].copy(), geometry.quat_xyzw(t_base_thing[:3, :3]),
                    tuple(sorted(d.marker_id for d in seen)))

    def _joint(self, markers: MarkerSet, seen: list[Detection],
               guess: np.ndarray) -> np.ndarray | None:
        """T_camera_thing from every seen marker's corners at once (Levenberg-Marquardt from
        ``guess``); None when it does not reproject within max_reproj_px."""
        corners3d = marker_corners_3d(markers.marker_m)
        obj = np.concatenate([[geometry.apply(markers.placement(d.marker_id), c)
                               for c in corners3d] for d in seen])
        img = np.concatenate([d.corners for d in seen])
        assert self._intr is not None     # set by track() before any _locate
        k, dist = self._intr.matrix(), self._intr.dist_coeffs()
        rvec, _ = cv2.Rodrigues(guess[:3, :3])
        tvec = guess[:3, 3].reshape(3, 1).copy()
        ok, rvec, tvec = cv2.solvePnP(obj, img, k, dist, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()):
            return None
        projected, _ = cv2.projectPoints(obj, rvec, tvec, k, dist)
        err = float(np.sqrt(np.mean(np.sum((projected.reshape(-1, 2) - img) ** 2, axis=1))))
        if not err <= self.detector.max_reproj_px:
            return None
        rot, _ = cv2.Rodrigues(rvec)
        return geometry.transform(rot, tvec.reshape(3))
