"""One exception tree for dualscreen; low-level errors are translated into these at the boundary.

DualscreenError
├── TaxonomyError        taxonomy file invalid, or an unknown label named somewhere
├── ConfigError          a training or serving setting is invalid
├── InputError           a user file cannot be read at all (missing, wrong format, bad column map)
│   └── TruncatedInputError  a compressed file ended early (rows before it were delivered)
├── OutputError          an output file cannot be written (disk full, size limit, read-only)
└── ArtifactError        a model folder is unusable
    ├── FormatVersionError   written by an incompatible dualscreen
    └── ChecksumError        a file does not match the manifest's sha256
"""

from __future__ import annotations


class DualscreenError(Exception):
    """Base class of every error dualscreen raises on purpose."""


class TaxonomyError(DualscreenError):
    """The taxonomy is invalid or a label is not in it."""


class ConfigError(DualscreenError):
    """A configuration value is invalid."""


class InputError(DualscreenError):
    """A user-supplied file or record cannot be read."""


class TruncatedInputError(InputError):
    """A compressed input ended before its end-of-stream marker."""


class OutputError(DualscreenError):
    """An output file cannot be written; the last checkpoint still stands."""


class ArtifactError(DualscreenError):
    """A model artifact folder is missing files, malformed or unsafe."""


class FormatVersionError(ArtifactError):
    """The artifact's format version is not one this code reads."""


class ChecksumError(ArtifactError):
    """A file in the artifact does not match the checksum in its manifest."""
