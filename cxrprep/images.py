"""DICOM / JPEG / PNG -> 8-bit MONOCHROME2 arrays -> resized, CLAHE'd, encoded shard images.

Decoding rules (the things that go wrong in real CXR files):

* DICOM (pydicom + pylibjpeg plugins: uncompressed, JPEG baseline/extended/lossless, JPEG 2000, RLE).
  Files without the 128-byte preamble / File Meta (ACR-NEMA style) are read with ``force=True`` and an
  assumed implicit-VR little-endian transfer syntax. Then: Modality LUT (rescale slope/intercept),
  VOI LUT (window centre/width, or the first VOI LUT Sequence item), min-max to 0..255, and MONOCHROME1
  inverted so that bone is bright. RGB/YBR DICOMs are converted to grey; other photometric
  interpretations (PALETTE COLOR, ...) raise ImageError naming the value.
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

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

cv2.setNumThreads(1)  # parallelism comes from our worker processes; OpenCV's own threads oversubscribe

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ImageSettings:
    """Image options shared by every cxrprep command that writes images (recorded in the manifest)."""

    size: int = 512  # shorter side in pixels after resizing; images are never upscaled
    clahe: bool = True  # write an offline CLAHE copy (image_clahe); --no-clahe -> null
    clahe_clip: float = 2.0  # CLAHE clip limit
    clahe_tiles: int = 8  # CLAHE tile grid is tiles x tiles
    format: str = "jpeg"  # "jpeg" or "png" (lossless)
    quality: int = 95  # JPEG quality 1..100
    max_pixels: int = 178_956_970  # decompression-bomb guard (same limit as Pillow's)

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"--size must be >= 32 pixels, got {self.size}")
        if self.clahe_clip <= 0:
            raise ValueError(f"--clahe-clip must be > 0, got {self.clahe_clip}")
        if not 1 <= self.clahe_tiles <= 64:
            raise ValueError(f"--clahe-tiles must be in 1..64, got {self.clahe_tiles}")
        if self.format not in ("jpeg", "png"):
            raise ValueError(f"--format must be 'jpeg' or 'png', got {self.format!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"--quality must be in 1..100, got {self.quality}")
        if self.max_pixels < 1:
            raise ValueError(f"--max-image-pixels must be >= 1, got {self.max_pixels}")

    def manifest(self) -> dict:
        d = asdict(self)
        d.update(dtype="uint8", photometric="MONOCHROME2", interpolation="INTER_AREA", clahe_after_resize=True)
        return d


class ImageError(ValueError):
    """One file could not become an image; ``str(e)`` is the readable reason."""


# -- decoding -------------------------------------------------------------------------------------
def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Min-max scale any numeric array to uint8 (a constant image becomes all zeros)."""
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float32, copy=False)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return ((a - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


def _gray(a: np.ndarray, path: Path) -> np.ndarray:
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] == 1:
        return a[:, :, 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):  # OpenCV order: BGR / BGRA; alpha is ignored
        if a.dtype != np.uint8 and a.dtype != np.uint16:
            a = _to_uint8(a)
        return cv2.cvtColor(a[:, :, :3], cv2.COLOR_BGR2GRAY)
    raise ImageError(f"{path}: unsupported pixel array shape {a.shape}")


def _check_pixels(path: Path, h: int, w: int, max_pixels: int) -> None:
    if h * w > max_pixels:
        raise ImageError(f"{path}: image {w}x{h} ({h * w:,} pixels) exceeds --max-image-pixels ({max_pixels:,})")
    if h < 1 or w < 1:
        raise ImageError(f"{path}: image has no pixels ({w}x{h})")


def _jpeg_reduction(h: int, w: int, min_side: int | None) -> int:
    if not min_side:
        return 1
    for k in (8, 4, 2):
        if min(h, w) // k >= min_side:
            return k
    return 1


def _read_raster(path: Path, data: bytes, min_side: int | None, max_pixels: int) -> np.ndarray:
    from PIL import Image

    import io

    try:
        with Image.open(io.BytesIO(data)) as im:  # header only: size without decoding
            w, h = im.size
    except Exception as e:  # PIL raises many types for garbage; it is only a size probe
        raise ImageError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    _check_pixels(path, h, w, max_pixels)
    buf = np.frombuffer(data, np.uint8)
    if data.startswith(_JPEG_MAGIC):
        k = _jpeg_reduction(h, w, min_side)
        flag = {1: cv2.IMREAD_GRAYSCALE, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
                4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[k]
        a = cv2.imdecode(buf, flag)
    else:
        a = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)  # keeps 16-bit PNG depth
    if a is None:
        raise ImageError(f"{path}: truncated or corrupt image data")
    a = _gray(a, path)
    return _to_uint8(a)


def _read_dicom(path: Path, max_pixels: int) -> tuple[np.ndarray, str | None]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ImplicitVRLittleEndian

    try:
        ds = pydicom.dcmread(str(path), force=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as e:
        raise ImageError(f"{path}: not a readable DICOM file ({e})") from None
    if "PixelData" not in ds:
        raise ImageError(f"{path}: DICOM has no PixelData (not an image)")
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        # no preamble / File Meta (ACR-NEMA): the standard default is implicit VR little endian
        if meta is None:
            ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    _check_pixels(path, rows, cols, max_pixels)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT"):
        raise ImageError(f"{path}: PhotometricInterpretation {photometric} is not supported "
                         f"(supported: MONOCHROME1, MONOCHROME2, RGB, YBR_*)")
    try:
        a = ds.pixel_array
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, TypeError) as e:
        ts = ds.file_meta.get("TransferSyntaxUID", "?")
        name = getattr(ts, "name", str(ts))
        raise ImageError(f"{path}: cannot decode pixel data (transfer syntax {name}): {e}") from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 and a.ndim >= 3 and photometric.startswith("MONO"):
        a = a[0]  # multi-frame: the first frame
    if photometric.startswith("MONO"):
        from pydicom.pixels import apply_modality_lut, apply_voi_lut

        a = apply_modality_lut(a, ds)
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            a = apply_voi_lut(a, ds, index=0)  # the first of several windows / VOI LUTs
        a = _to_uint8(a)
        if photometric == "MONOCHROME1":
            a = 255 - a  # MONOCHROME1: low values are bright; invert so bone is bright
    else:
        # pydicom returns RGB for colour photometrics (it converts YBR by default)
        a = cv2.cvtColor(_to_uint8(a) if a.dtype != np.uint8 else a, cv2.COLOR_RGB2GRAY)
    view = ds.get("ViewPosition", None)
    view = str(view).strip().upper() or None if view is not None else None
    return a, view


def is_dicom(data: bytes, path: Path) -> bool:
    return (len(data) > 132 and data[128:132] == b"DICM") or path.suffix.lower() in (".dcm", ".dicom")


def read_gray(path: str | Path, min_side: int | None = None, max_pixels: int = ImageSettings.max_pixels
              ) -> tuple[np.ndarray, str | None]:
    """Decode any supported file to a 2-D uint8 MONOCHROME2 array (bone bright).

    ``min_side``: the caller will resize the shorter side to this; JPEGs may then be decoded at 1/2, 1/4
    or 1/8 size, never below it. Returns (array, DICOM ViewPosition or None). Raises ImageError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes)")
    if data.startswith(_JPEG_MAGIC) or data.startswith(_PNG_MAGIC):
        return _read_raster(path, data, min_side, max_pixels), None
    if is_dicom(data, path):
        return _read_dicom(path, max_pixels)
    try:  # other raster formats (TIFF, BMP...) or a DICOM without preamble and an odd suffix
        return _read_raster(path, data, min_side, max_pixels), None
    except ImageError:
        return _read_dicom(path, max_pixels)


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
    return cv2.createCLAHE(clipLimit=settings.clahe_clip,
                           tileGridSize=(settings.clahe_tiles, settings.clahe_tiles)).apply(a)


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


def process_study_images(items: Sequence[tuple[str, str, str | None]], settings: ImageSettings
                         ) -> tuple[list[dict], list[tuple[str, str]]]:
    """Process a study's images: (path, image_id, view) items -> (images that worked, [(path, reason)]).
    Never raises for a per-file problem; meant to run inside a worker process."""
    ok, failed = [], []
    for path, image_id, view in items:
        try:
            ok.append(process_image(path, image_id, view, settings))
        except ImageError as e:
            failed.append((str(path), str(e)))
        except MemoryError:
            failed.append((str(path), f"{path}: out of memory while decoding"))
    return ok, failed

