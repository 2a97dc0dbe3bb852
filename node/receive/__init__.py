"""The receive stage: the node's DICOM SCP (its own PS3.8 acceptor; pynetdicom for the A-ASSOCIATE items).

- :mod:`~node.receive.policy`: who may open an association (calling AE of a peer with ``allow_store``,
  from its addresses; our called AE title; the association limit), rejections logged once.
- :mod:`~node.receive.identify`: the UIDs of a received dataset, read from its bytes without decoding
  pixel data.
- :mod:`~node.receive.handlers`: C-ECHO and C-STORE (durable write, index row, then the status) and the
  association bookkeeping the completion timer needs.
- :mod:`~node.receive.acceptor`: one connection from A-ASSOCIATE-RQ to its end (PS3.8 on a blocking socket).
- :mod:`~node.receive.slots`: associations open at once, against the node's and each peer's limits.
- :mod:`~node.receive.server`: the listener (TCP_NODELAY, TLS, SO_REUSEPORT) and admission.
"""

from __future__ import annotations

from node.receive.handlers import StoreHandler
from node.receive.server import Receiver

__all__ = ["Receiver", "StoreHandler"]
