"""Radiographs: DICOM/JPEG/PNG -> 8-bit MONOCHROME2, resize, CLAHE, encode.

``process.py`` (read_gray, process_image: the public entry points), ``dicom.py`` (DICOM decoding), ``pixels.py``
(scaling to uint8, colour to grey, the pixel-count guard), ``settings.py`` (ImageSettings, MAX_IMAGE_PIXELS)."""
