"""User-facing errors.

Every error raised for something the user can fix derives from :class:`Pano360Error`; its message is
one line that says what is wrong *and* what to change. The CLI prints such errors without a traceback
and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class Pano360Error(Exception):
    """Base class for errors with a message meant for the user."""


class InvalidInputError(Pano360Error, ValueError):
    """A parameter or input file is invalid; the message names the fix."""


class ModelLoadError(Pano360Error, OSError):
    """A model, LoRA, embedding or ControlNet could not be found or loaded."""


class OutputExistsError(Pano360Error, FileExistsError):
    """Refusing to overwrite a file the user already has."""
