"""DICOM / JPEG / PNG -> 8-bit MONOCHROME2 arrays -> resized, CLAHE'd, encoded shard images.

Decoding rules (the things that go wrong in real CXR files):

* DICOM (pydicom + pylibjpeg plugins: uncompressed, JPEG baseline/extended/lossless, JPEG 2000, RLE).
  Files without the 128-byte preamble / File Meta (ACR-NEMA style) are read with ``force=True`` and an
  assumed implicit-VR little-endian transfer syntax. Then: Modality LUT (rescale slope/intercept),
  VOI LUT (window centre/width, or the first VOI LUT Sequence item), min-max to 0..255, and MONOCHROME1
  inverted so that bone is bright. RGB/YBR DICOMs are converted to grey; other photometric
  interpretations (PALETTE COLOR, ...) raise ImageError naming the value. Multi-frame files: only the
  first frame is decoded.
* Robustness: integer header values given as text ("512") are normalised, garbage ("1A") is a reject;
  a PhotometricInterpretation that contradicts SamplesPerPixel, a malformed Modality or VOI LUT Sequence,
  a non-finite RescaleSlope/Intercept (NaN, 1e308) or a decoded array whose shape contradicts the header
  is a reject; an unusable window (WindowWidth 0 or text, or one that misses the data) is ignored. Pixel
  values that are not finite, and blank images (a single value), are rejects: never an all-black row.
* ``--max-image-pixels`` counts frames x rows x columns x samples per pixel, from the header (DICOM) or
  the image header (Pillow), before anything is decoded.
* PNG: 8- or 16-bit, grey, RGB or RGBA (real NIH files are RGBA with R=G=B): converted to 8-bit grey;
  16-bit is min-max scaled.
* JPEG: OpenCV's reduced-size decoding (IMREAD_REDUCED_GRAYSCALE_2/4/8) whenever the reduced image is
  still at least the target size: the IDCT runs at the small size, which halves decode+resize time for
  large (2500x3000) files.

Processing: shorter side to ``size`` with INTER_AREA (never upscaled), CLAHE on the resized image (3x
cheaper than at full size), JPEG quality 95 or PNG. Nothing from a DICOM header leaves this module except
ViewPosition.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from cxrprep.image.dicom import read_dicom
from cxrprep.image.pixels import as_gray, check_pixels, to_uint8
from cxrprep.image.settings import MAX_IMAGE_PIXELS, ImageError, ImageSettings

cv2.setNumThreads(1)  # parallelism comes from our worker processes; OpenCV's own threads oversubscribe

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _jpeg_reduction(h: int, w: int, min_side: int | None) -> int:
    if not min_side:
        return 1
    for k in (8, 4, 2):
        if min(h, w) // k >= min_side:
            return k
    return 1


def _read_raster(path: Path, data: bytes, min_side: int | None, max_pixels: int) -> np.ndarray:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:  # header only: size without decoding
            w, h = im.size
            bands = len(im.getbands())
            frames = max(1, int(getattr(im, "n_frames", 1) or 1))
    except Exception as e:  # PIL raises many types for garbage; it is only a size probe
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    check_pixels(path, h, w, max_pixels, frames=frames, samples=bands)
    buf = np.frombuffer(data, np.uint8)
    if data.startswith(_JPEG_MAGIC):
        k = _jpeg_reduction(h, w, min_side)
        flag = {
            1: cv2.IMREAD_GRAYSCALE,
            2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
            4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
            8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
        }[k]
        a = cv2.imdecode(buf, flag)
    else:
        a = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # keeps 16-bit PNG depth
    if a is None:
        raise ImageError(f"{path}: truncated or corrupt image data")
    a = as_gray(a, path)
    return to_uint8(a, path)


def is_dicom(data: bytes, path: Path) -> bool:
    return (len(data) > 132 and data[128:132] == b"DICM") or path.suffix.lower() in (".dcm", ".dicom")


def read_gray(
    path: str | Path, min_side: int | None = None, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, str | None]:
    """Decode any supported file to a 2-D uint8 MONOCHROME2 array (bone bright).

    ``min_side``: the caller will resize the shorter side to this; JPEGs may then be decoded at 1/2, 1/4
    or 1/8 size, never below it. Returns (array, DICOM ViewPosition or None). Raises ImageError."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):  # a device (/dev/zero), FIFO or folder would block or never end
        raise ImageError(f"{path}: not a regular file")
    limit = max_pixels * 4 + 16 * 2**20  # 4 bytes per sample at most, plus headers
    if st.st_size > limit:
        raise ImageError(
            f"{path}: {st.st_size:,} bytes, more than any image within --max-image-pixels ({max_pixels:,}) can take"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes)")
    if data.startswith(_JPEG_MAGIC) or data.startswith(_PNG_MAGIC):
        return _read_raster(path, data, min_side, max_pixels), None
    if is_dicom(data, path):
        return read_dicom(path, max_pixels)
    try:  # other raster formats (TIFF, BMP...) or a DICOM without preamble and an odd suffix
        return _read_raster(path, data, min_side, max_pixels), None
    except ImageError:
        return read_dicom(path, max_pixels)


# -- processing -----------------------------------------------------------------------------------
def resize_short(a: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size`` with INTER_AREA, aspect kept; never upscales."""
    h, w = a.shape[:2]
    s = size / min(h, w)
    if s >= 1:
        return a
    return cv2.resize(a, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def encode(a: np.ndarray, settings: ImageSettings) -> bytes:
    if settings.format == "png":
        ok, buf = cv2.imencode(".png", a, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, settings.quality])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 2-D array
        raise ImageError("encoding failed")
    return buf.tobytes()


def apply_clahe(a: np.ndarray, settings: ImageSettings) -> np.ndarray:
    return cv2.createCLAHE(
        clipLimit=settings.clahe_clip, tileGridSize=(settings.clahe_tiles, settings.clahe_tiles)
    ).apply(a)


def process_image(path: str | Path, image_id: str, view: str | None, settings: ImageSettings) -> dict:
    """One file -> a dict matching schema.IMAGE. ``view`` from metadata wins over the DICOM header.
    Raises ImageError."""
    a, dicom_view = read_gray(path, settings.size, settings.max_pixels)
    a = resize_short(a, settings.size)
    return dict(
        image_id=image_id,
        view=(view or dicom_view or None),
        image=encode(a, settings),
        image_clahe=encode(apply_clahe(a, settings), settings) if settings.clahe else None,
        height=int(a.shape[0]),
        width=int(a.shape[1]),
    )


def process_study_images(
    items: Sequence[tuple[str, str, str | None]], settings: ImageSettings
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Process a study's images: (path, image_id, view) items -> (images that worked, [(path, reason)]).
    Never raises for a per-file problem; meant to run inside a worker process."""
    ok, failed = [], []
    for path, image_id, view in items:
        try:
            ok.append(process_image(path, image_id, view, settings))
        except ImageError as e:
            failed.append((str(path), _one_line(str(e))))
        except MemoryError:
            failed.append((str(path), f"{path}: out of memory while decoding"))
        except Exception as e:  # any other problem of this one file is a reject, never the end of the run
            failed.append((str(path), _one_line(f"{path}: {type(e).__name__}: {e}")))
    return ok, failed


def _one_line(message: str, limit: int = 500) -> str:
    """A reject reason on one line (OpenCV and the DICOM decoders write multi-line messages)."""
    m = " ".join(message.split())
    return m if len(m) <= limit else m[: limit - 3] + "..."
