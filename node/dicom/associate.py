"""What the node says about itself in every A-ASSOCIATE (PS3.7 Annex D, PS3.8 Annex D), as requestor and acceptor.

The A-ASSOCIATE PDUs are encoded by pynetdicom's PDU classes; these are the items the node puts in them.
"""

from __future__ import annotations

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu_primitives import (
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # the DICOM Application Context Name


def user_information(
    max_pdu: int,
) -> list[MaximumLengthNotification | ImplementationClassUIDNotification | ImplementationVersionNameNotification]:
    """Maximum Length (the largest P-DATA-TF we take, 0 = any), Implementation Class UID and Version Name
    (pynetdicom's: its codecs build the PDUs)."""
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    uid = ImplementationClassUIDNotification()
    uid.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    return [length, uid, version]
