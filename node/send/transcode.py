"""Decode a stored instance for a peer that does not accept the transfer syntax it is stored in.

The SCU sends a file as it is stored whenever the peer accepts its transfer syntax. When the peer accepted
only uncompressed syntaxes, :func:`decode_to` reads the file into memory and returns a dataset with native
pixel data, which pynetdicom encodes in the accepted syntax (Explicit VR Little Endian, or Implicit when
only that was accepted). The stored file is never written to.

What the decoding does, by stored syntax (pydicom 3 with pylibjpeg, pylibjpeg-libjpeg,
pylibjpeg-openjpeg and pyjpegls; :func:`can_decode` says which syntaxes have a decoder at all):

======================================  ==================================================================
stored in                               what happens
======================================  ==================================================================
Explicit / Implicit VR Little Endian    nothing decoded; pynetdicom re-encodes the other uncompressed VR
Deflated Explicit VR Little Endian      inflated by pydicom on reading; nothing else to decode
JPEG baseline / extended / lossless,    the pixel data of every frame decoded (``Dataset.decompress``);
JPEG-LS, JPEG 2000, RLE (and HTJ2K:     YBR (JPEG's YBR_FULL_422, JPEG 2000's YBR_ICT/YBR_RCT) becomes RGB
pylibjpeg-openjpeg has a decoder for    and Planar Configuration 0; Number of Frames kept; pixel data OB
it, untested here: no sample file)      (8 bits allocated) or OW, padded to even length
Explicit VR Big Endian (retired),       not decoded (:class:`TranscodeError`): OW/OF/UN values would need
video (MPEG-2, H.264, HEVC), private    byte swapping we cannot do reliably, and video has no decoder
======================================  ==================================================================

Fixes decoding must make, beyond what pydicom's ``decompress`` does:

- The SOP Instance UID is kept (``generate_instance_uid=False``): it is the same instance in another
  transfer syntax, and the peer and our send jobs know it by that UID.
- Pixel data nested in sequences (an Icon Image Sequence) is encapsulated in the same syntax: decoded too,
  or the dataset would carry encapsulated pixel data in a native syntax.
- The Extended Offset Table (7FE0,0001), its lengths (7FE0,0002) and the Encapsulated Pixel Data Value
  Total Length (7FE0,0003) describe encapsulated pixel data only: removed.
- A JPEG baseline or extended file (always lossy) lacking Lossy Image Compression = "01" gets it, and
  ``ISO_10918_1`` as the method when none is given: the decoded pixels must not pass for original ones.

Lossless syntaxes decode to the exact pixel values that were encoded (the tests compare them).
Errors that another try cannot fix (no decoder plugin installed, corrupt or unsupported compressed data,
an unreadable dataset) raise :class:`TranscodeError` naming the file and the syntax; ``OSError`` while
reading passes through (the disk may recover: the SCU retries it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from node.send.errors import SendError

__all__ = ["DECODED_SYNTAXES", "TranscodeError", "can_decode", "decode_to"]

log = logging.getLogger(__name__)

# What decode_to can produce: the syntaxes pynetdicom encodes a dataset in.
DECODED_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Syntaxes whose pixel data is always lossy, with their Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1).
_LOSSY_ONLY = {JPEGBaseline8Bit: "ISO_10918_1", JPEGExtended12Bit: "ISO_10918_1"}
# Plugins tried first where pydicom's own order is slower: for JPEG-LS it tries pylibjpeg (libjpeg) before
# pyjpegls, which decodes a 512 x 512 16-bit slice about three times faster (8 ms against 26 ms).
_FASTEST = {JPEGLSLossless: "pyjpegls", JPEGLSNearLossless: "pyjpegls"}
# Elements that describe encapsulated pixel data only.
_ENCAPSULATION_ONLY = (0x7FE00001, 0x7FE00002, 0x7FE00003)


class TranscodeError(SendError):
    """A stored file cannot be decoded for the peer: no decoder, corrupt data, an unsupported syntax.

    The message names the file and its transfer syntax; another try with the same software cannot help.
    """


def can_decode(syntax: UID) -> bool:
    """Whether :func:`decode_to` handles files stored in ``syntax`` (a decoder plugin may still be missing).

    True for uncompressed and deflated little endian and for every compressed syntax pydicom has a pixel
    data decoder for; false for big endian, video, private and unknown syntaxes.
    """
    syntax = UID(syntax)
    if syntax in DECODED_SYNTAXES or syntax == DeflatedExplicitVRLittleEndian:
        return True
    if not syntax.is_transfer_syntax or not syntax.is_compressed:
        return False  # private or unknown, or Explicit VR Big Endian
    try:
        get_decoder(syntax)
    except NotImplementedError:  # video and other syntaxes without a pixel data decoder
        return False
    return True


def decode_to(path: Path, transfer_syntax: UID) -> Dataset:
    """The instance in ``path`` as a dataset to send in ``transfer_syntax``, the file left untouched.

    Parameters
    ----------
    path
        A Part-10 file.
    transfer_syntax
        Explicit or Implicit VR Little Endian: the syntax the peer accepted, which pynetdicom's
        ``send_c_store`` encodes the dataset in.

    Returns
    -------
    Dataset
        The whole instance in memory with native (uncompressed) pixel data. Its file meta Transfer Syntax
        UID says how its elements are encoded in memory: Explicit VR Little Endian once decoded or
        inflated, the stored syntax for an uncompressed file. When that differs from ``transfer_syntax``,
        pydicom converts the VRs while encoding (ambiguous VRs resolved, raw elements parsed): the
        dataset's encoding is never relabelled, which would make pydicom copy raw elements unconverted.

    Raises
    ------
    TranscodeError
        The file's dataset cannot be read, its syntax has no decoder (:func:`can_decode`), no decoder
        plugin is installed for it, or its pixel data cannot be decoded.
    OSError
        Reading the file failed (``FileNotFoundError`` when it is gone).
    ValueError
        ``transfer_syntax`` is not one :func:`decode_to` produces (a bug in the caller).
    """
    target = UID(transfer_syntax)
    if target not in DECODED_SYNTAXES:
        raise ValueError(f"decode_to produces {' or '.join(s.name for s in DECODED_SYNTAXES)}, not {target.name}")
    try:
        ds = dcmread(path)
        stored = UID(str(ds.file_meta.get("TransferSyntaxUID", "") or "").strip())
    except OSError:
        raise
    except Exception as exc:  # pydicom raises assorted errors on a damaged file
        raise TranscodeError(f"file {path} cannot be read for decoding: {_one_line(exc)}") from exc
    if not can_decode(stored):
        why = "a retired byte order we do not convert" if stored.is_transfer_syntax else "not a syntax we know"
        raise TranscodeError(f"file {path} is stored in {stored.name} ({why}): it cannot be decoded for the peer")
    if stored in DECODED_SYNTAXES:
        return ds  # pydicom converts explicit <-> implicit VR when pynetdicom encodes it for the peer
    if stored.is_compressed:
        try:
            _decode_pixels(ds, stored)
        except Exception as exc:  # missing plugin (RuntimeError), corrupt data: assorted errors from the codecs
            why = f"file {path}: its {stored.name} pixel data cannot be decoded: {_one_line(exc)}"
            raise TranscodeError(why) from exc
        if stored in _LOSSY_ONLY and ds.get("LossyImageCompression") != "01":
            ds.LossyImageCompression = "01"
            if "LossyImageCompressionMethod" not in ds:
                ds.LossyImageCompressionMethod = _LOSSY_ONLY[stored]
    # Compressed and deflated datasets are Explicit VR Little Endian once decoded (or inflated, on reading).
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _decode_pixels(ds: Dataset, stored: UID) -> None:
    """Decode the encapsulated pixel data of ``ds`` and of every nested dataset, in place."""
    nested = list(_encapsulated_items(ds))  # found before the top level is decoded (its value changes)
    if "PixelData" in ds:
        _decompress(ds, stored)
    for tag in _ENCAPSULATION_ONLY:
        if tag in ds:
            del ds[tag]
    for item in nested:
        # pydicom's decompress reads the syntax from file meta, which a sequence item lacks: lend it one.
        item.file_meta = FileMetaDataset()
        item.file_meta.TransferSyntaxUID = stored
        try:
            _decompress(item, stored)
        finally:
            del item.file_meta
        for tag in _ENCAPSULATION_ONLY:
            if tag in item:
                del item[tag]


def _decompress(ds: Dataset, stored: UID) -> None:
    """pydicom's ``decompress`` keeping the SOP Instance UID, the fastest plugin first when we know it.

    ``decompress`` changes ``ds`` only after every frame decoded, so a failed attempt leaves it as it was.
    """
    plugin = _FASTEST.get(stored, "")
    if plugin and plugin in get_decoder(stored).available_plugins:
        try:
            ds.decompress(as_rgb=True, generate_instance_uid=False, decoding_plugin=plugin)
            return
        except Exception as exc:  # the codecs raise assorted errors: let every plugin try
            log.debug("decoding %s with %s failed (%s); trying every plugin", stored.name, plugin, _one_line(exc))
    ds.decompress(as_rgb=True, generate_instance_uid=False)


def _encapsulated_items(ds: Dataset) -> Iterator[Dataset]:
    """Sequence items, at any depth, holding encapsulated (undefined length) Pixel Data."""
    for elem in ds:
        if elem.VR != "SQ":
            continue
        for item in elem.value:
            pixel_data = item.get((0x7FE0, 0x0010))
            if pixel_data is not None and pixel_data.is_undefined_length:
                yield item
            yield from _encapsulated_items(item)


def _one_line(exc: BaseException) -> str:
    """An exception as one line (pydicom lists each plugin's error on a line of its own)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
