"""One exception hierarchy whose messages are written for the user.

The CLI prints ``str(error)`` and exits with status 2; the GUI shows it in a dialog or inline.
"""

from __future__ import annotations


class QuantDeskError(Exception):
    """Base class: the message names the file or value and the cause."""


class ModelFileError(QuantDeskError):
    """A model file is missing, not GGUF, truncated, or of an unsupported architecture."""


class BadValueError(QuantDeskError):
    """A parameter given by the user is out of range."""


class EngineError(QuantDeskError):
    """The engine reported a failure (load or generation)."""


class EngineCrashed(EngineError):
    """The engine process died (native crash, abort, out of memory, killed)."""


class ConversionError(QuantDeskError):
    """Converting a Hugging Face model folder to GGUF failed (the converter's reason included)."""


class QuantizeError(QuantDeskError):
    """Quantizing a GGUF file, or computing its importance matrix, failed."""


class DiskSpaceError(QuantDeskError):
    """The destination has too little free space for the files a job would write."""
