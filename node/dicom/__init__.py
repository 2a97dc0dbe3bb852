"""Stage-free DICOM helpers: named status codes and presentation contexts (no bare hex elsewhere)."""
