"""pacs-node: a DICOM integration node between scanners and the PACS."""

__version__ = "0.1.0"
