"""Radiographs: DICOM/JPEG/PNG -> 8-bit MONOCHROME2, resize, CLAHE, encode (process)."""
