"""Synthetic, patient-free test data: a CT phantom generator and a DICOM writer for it."""
