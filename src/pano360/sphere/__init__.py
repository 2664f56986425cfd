"""Full-sphere panoramas: pole refinement, photo → 360° outpainting and seamless tiled upscaling.

Geometry (no models): :mod:`.poles`, :mod:`.placement`, :mod:`.tiles`, :mod:`.measures`.
Denoising and orchestration: :mod:`.inpaint`, :mod:`.pipeline`, :mod:`.upscale`. The user guide is
``docs/fullsphere.md``. Import the submodules directly (this package imports no torch by itself).
"""
