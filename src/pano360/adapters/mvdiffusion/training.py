"""The views ``pano360 train --adapter mvdiffusion`` asks the trainer for (digest §4).

The trainer (:mod:`pano360.training`) renders them from each augmented panorama (the reference renders
them from Matterport3D's cube faces), looks up each view's caption nearest in yaw, and trains with the
ε/v-MSE of :func:`pano360.backbones.guided.predict_noise` with one timestep per panorama, shared by its
views; :meth:`MVDiffusionAdapter.training_example` hands it the view latents, captions and cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cameras import Cameras, cameras_from_rig

REFERENCE_YAWS = tuple(float(45 * i) for i in range(8))


@dataclass(frozen=True)
class TrainingViews:
    """The views ``pano360 train`` renders from each (yaw-rolled) panorama for MVDiffusion: the fields of
    :class:`pano360.training.cache.ViewRequest` (yaw per view, pitch, horizontal FoV in degrees; the
    square view edge in pixels). The trainer's random yaw roll of the panorama is the reference's
    random global yaw; the cameras stay at 0, 45, …, 315° in the rolled frame."""

    yaw_deg: tuple[float, ...] = REFERENCE_YAWS
    pitch_deg: float = 0.0
    fov_deg: float = 90.0
    size_px: int = 512

    def cameras(self) -> Cameras:
        from ...geometry.rigs import ViewRig

        return cameras_from_rig(ViewRig.from_angles(list(self.yaw_deg), self.pitch_deg, self.fov_deg),
                                self.size_px, self.size_px)
