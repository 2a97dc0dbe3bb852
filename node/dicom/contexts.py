"""Presentation contexts: the transfer syntaxes the SCP accepts and what the SCU proposes.

The SCP stores instances as received, so it accepts every common transfer syntax, compressed ones
included, without decoding anything.
"""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

# Uncompressed first: a requestor proposing several syntaxes in one context gets the first we share.
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
ACCEPTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    *UNCOMPRESSED,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
