"""The receive stage: the node's DICOM SCP (pynetdicom).

- :mod:`~node.receive.policy`: who may open an association (calling AE of a peer with ``allow_store``,
  from its addresses; our called AE title; the association limit), rejections logged once.
- :mod:`~node.receive.identify`: the UIDs of a received dataset, read from its bytes without decoding
  pixel data.
- :mod:`~node.receive.handlers`: C-ECHO and C-STORE (durable write, index row, then the status) and the
  association bookkeeping the completion timer needs.
- :mod:`~node.receive.server`: the AE and its listener (TCP_NODELAY on every accepted socket).
"""

from __future__ import annotations

from node.receive.handlers import StoreHandler
from node.receive.server import Receiver

__all__ = ["Receiver", "StoreHandler"]
