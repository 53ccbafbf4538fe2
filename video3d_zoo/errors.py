"""One exception hierarchy for the whole package.

Every error the library raises on purpose derives from :class:`Video3DZooError`, so callers
can catch the package's failures with one ``except`` clause.  Subclasses that describe a bad
*value* also derive from :class:`ValueError` (and lookups from :class:`KeyError`), so code
written against the standard exceptions keeps working.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class Video3DZooError(Exception):
    """Base class of every error raised on purpose by video3d_zoo."""


class UnknownModelError(Video3DZooError, KeyError):
    """A model name (or alias) that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class RegistryError(Video3DZooError):
    """A registration that would make the registry ambiguous (duplicate name or alias)."""


class InputShapeError(Video3DZooError, ValueError):
    """A tensor whose rank, channel count or size does not fit the model."""


class ConfigError(Video3DZooError, ValueError):
    """A malformed model configuration (``config.json`` or keyword arguments)."""


class CheckpointError(Video3DZooError, ValueError):
    """A checkpoint that cannot be read, recognised or loaded exactly."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint that would execute code when loaded."""


class ManifestError(Video3DZooError, ValueError):
    """A weights manifest that does not validate; the message names entry and field."""


class WeightsNotFoundError(Video3DZooError, LookupError):
    """No manifest entry (or no published file) matches the requested weights."""


class WeightsUnavailableError(WeightsNotFoundError):
    """A manifest entry whose weights are nowhere to be loaded from: not embedded, not installed, not
    published.  ``str()`` gives the ways out as Python; ``cli_message`` gives the same ways out as
    ``video3d-zoo`` commands (the command line prints that one)."""

    def __init__(self, python_message: str, cli_message: str = "", entry=None) -> None:
        super().__init__(python_message)
        self.python_message = python_message
        self.cli_message = cli_message or python_message
        self.entry = entry


class DownloadError(Video3DZooError, OSError):
    """The weights could not be fetched (network, HTTP status, offline mode)."""


class IntegrityError(Video3DZooError, OSError):
    """A downloaded or cached file whose size or sha256 differs from the manifest."""


class DiskFullError(Video3DZooError, OSError):
    """An output could not be written for lack of space (or quota); the partial file was removed.
    ``errno`` and ``filename`` are the failed write's; ``str()`` is the message alone."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class VideoDecodeError(Video3DZooError, ValueError):
    """A video file that is missing, empty, corrupt or holds no video stream."""


class ExportError(Video3DZooError, RuntimeError):
    """A model that cannot be exported to the requested format; the message says why."""


class NonFiniteError(Video3DZooError, ValueError):
    """Model outputs (features, logits or scores) holding NaN or infinity; nothing is written."""


class TrainingDivergedError(Video3DZooError, RuntimeError):
    """Training produced a non-finite loss, gradient or weight; the message says where and what to try.

    Nothing non-finite is saved: the run's last (finite) checkpoint and any earlier export stay as they were.
    """


class TrainConfigError(ConfigError):
    """A training config that does not validate; the message names the key."""


class DataError(Video3DZooError, ValueError):
    """A data problem that stops the run (``on_error="fatal"``) or leaves nothing to train on."""


class EvalFailed(DataError):
    """No video could be evaluated; ``report`` holds what was found out (metrics are ``null``)."""

    def __init__(self, message: str, report: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.report = report
