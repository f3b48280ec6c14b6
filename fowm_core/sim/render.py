"""Offscreen camera images from a MuJoCo model, cheap enough for 84×84 observations on a CPU.

Shadows and reflections are switched off in the scene flags: on llvmpipe they dominate the render
cost (docs/platform.md §9). Set MUJOCO_GL=egl when headless.
"""

from __future__ import annotations

import mujoco
import numpy as np

from fowm_core.errors import EnvError


class CameraRenderer:
    """Renders one named camera; keeps one mujoco.Renderer per image size it was asked for."""

    def __init__(self, model: mujoco.MjModel, camera: str) -> None:
        self.model = model
        self.camera = camera
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

    def _renderer(self, width: int, height: int) -> mujoco.Renderer:
        key = (width, height)
        if key not in self._renderers:
            limit = (self.model.vis.global_.offwidth, self.model.vis.global_.offheight)
            if width > limit[0] or height > limit[1]:
                msg = (f"image {width}x{height} is larger than the model's offscreen buffer "
                       f"{limit[0]}x{limit[1]}; ask for a smaller image or raise <global "
                       f"offwidth/offheight> in fowm_core/sim/assets/scene.xml")
                raise EnvError(msg)
            renderer = mujoco.Renderer(self.model, height=height, width=width)
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            self._renderers[key] = renderer
        return self._renderers[key]

    def render(self, data: mujoco.MjData, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8."""
        renderer = self._renderer(width, height)
        renderer.update_scene(data, camera=self.camera)
        return renderer.render()

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
