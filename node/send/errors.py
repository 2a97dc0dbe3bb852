"""Errors of the send stage.

The SCU does not raise for network problems or peer answers: it returns one outcome per file
(:class:`node.send.outcomes.FileOutcome`). These errors are for what a person must fix::

    NodeError
    └── SendError               base of the send stage's errors
        ├── DestinationError    a destination cannot be used: unknown peer name, no host and port, bad HOST:PORT
        └── TranscodeError      a stored file cannot be decoded for a peer that does not take its transfer
                                syntax (node.send.transcode); the send is parked with this message
"""

from __future__ import annotations

from node.errors import NodeError


class SendError(NodeError):
    """Base of the send stage's errors."""


class DestinationError(SendError):
    """A destination cannot be used: an unknown peer name, a peer without host and port, a bad ``HOST:PORT``."""
