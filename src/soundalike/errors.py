"""Typed errors.  Every error names what it is about and why, in one line.

``SoundalikeError`` is the root; the CLI turns any of them into a one-line message
and a non-zero exit status instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class SoundalikeError(Exception):
    """Base class of every error soundalike raises on purpose."""


class AudioDecodeError(SoundalikeError):
    """A file could not be turned into samples.

    Parameters
    ----------
    path : path of the offending file
    reason : short human-readable reason ("zero bytes", "truncated", ...)
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class AudioTooLongError(AudioDecodeError):
    """A clip is longer than the caller accepts (decoding stopped at the limit)."""


class ConfigError(SoundalikeError):
    """A configuration value is out of range or inconsistent."""


class WorkerStartError(SoundalikeError):
    """Worker processes could not start (e.g. a script without a ``__main__`` guard)."""


class CatalogError(SoundalikeError):
    """The catalog cannot be opened, migrated or queried."""


class CatalogBusyError(CatalogError):
    """Another writer held what this transaction needed (deadlock, lock timeout): retry it."""


class TrackNotFoundError(CatalogError):
    """A track reference (id, path or title) matched nothing in the catalog."""


class ModelError(SoundalikeError):
    """A model cannot be found, loaded or run."""


class CheckpointError(ModelError):
    """A checkpoint file is missing, malformed or incompatible."""


class ModelMismatchError(ModelError):
    """Embeddings, an index or a checkpoint were made by a different model than expected."""


class QueryError(SoundalikeError):
    """A filter expression or search query is malformed."""


class DatasetError(SoundalikeError):
    """A dataset description cannot be read or is empty."""


class DeviceError(SoundalikeError):
    """No usable audio input device (microphone) exists or it cannot be opened."""


class SoundalikeWarning(UserWarning):
    """Something works but not as well as it could (the CLI prints it as one ``warning:`` line)."""
