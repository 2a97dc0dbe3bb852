"""The node's exception tree.

Every error the node raises on purpose derives from ``NodeError``; its message is written for the
person who must act on it (it names the file, the field and what to do). Stage boundaries (the CLI,
handlers, worker loops) catch ``NodeError`` and print or log ``str(error)``; anything else reaching a
boundary is a bug and is logged with its traceback.

    NodeError
    ├── ConfigError            a config file or model card is invalid (message carries the key path)
    ├── ModelError             a model cannot be loaded or run
    │   └── ChecksumError      the ONNX file does not match the card's sha256
    ├── InputError             input data cannot be used
    │   ├── UnreadableFileError    a file is not DICOM or cannot be parsed / decoded
    │   └── SeriesError            a series cannot become one volume (geometry, mixed acquisitions)
    └── EncodeError            a result object (SEG, SR, SC) could not be created valid
"""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error the node raises on purpose."""


class ConfigError(NodeError):
    """A configuration file or model card is invalid."""


class ModelError(NodeError):
    """A model cannot be loaded or run."""


class ChecksumError(ModelError):
    """The model file does not match the sha256 recorded in its card."""


class InputError(NodeError):
    """Input data cannot be used."""


class UnreadableFileError(InputError):
    """A file is not DICOM, or its content cannot be parsed or decoded."""


class SeriesError(InputError):
    """A series cannot become one volume."""


class EncodeError(NodeError):
    """A result object could not be created valid."""
