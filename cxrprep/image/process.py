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
from dataclasses import asdict, dataclass
from pathlib import Path
from struct import error as struct_error
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
def _to_uint8(a: np.ndarray, path: Path | str = "") -> np.ndarray:
    """Min-max scale any numeric array to uint8. Raises ImageError for non-finite values (NaN, inf: e.g. a
    RescaleSlope of NaN or 1e308) and for an image with a single value (it would be all black)."""
    if a.dtype == np.uint8:
        if a.size and int(a.min()) == int(a.max()):
            raise ImageError(f"{path}: blank image (every pixel is {int(a.min())})")
        return a
    if a.dtype.kind == "f" or a.dtype.itemsize > 2:
        a = a.astype(np.float64, copy=False)  # float32 would overflow to inf for values past 3.4e38
    else:
        a = a.astype(np.float32, copy=False)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ImageError(f"{path}: pixel values are not finite (NaN or infinity; check RescaleSlope/Intercept)")
    lo, hi = float(a.min()), float(a.max())
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(hi - lo)):
        raise ImageError(f"{path}: pixel value range {lo:g}..{hi:g} is not finite")
    if hi <= lo:
        raise ImageError(f"{path}: blank image (every pixel is {lo:g})")
    return ((a - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


def _rgb_to_gray(a: np.ndarray, path: Path, order: str) -> np.ndarray:
    """(H, W, 3|4) colour -> (H, W) uint8; ``order`` is "BGR" (OpenCV) or "RGB" (pydicom); alpha ignored."""
    if a.dtype == np.uint8:
        return cv2.cvtColor(
            np.ascontiguousarray(a[:, :, :3]), cv2.COLOR_BGR2GRAY if order == "BGR" else cv2.COLOR_RGB2GRAY
        )
    ft = np.float32 if a.dtype.kind in "ui" and a.dtype.itemsize <= 2 else np.float64  # 16-bit: float32 is exact
    w = np.array([0.114, 0.587, 0.299] if order == "BGR" else [0.299, 0.587, 0.114], ft)
    return _to_uint8(a[:, :, :3].astype(ft) @ w, path)


def _gray(a: np.ndarray, path: Path) -> np.ndarray:
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] == 1:
        return a[:, :, 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):  # OpenCV order: BGR / BGRA; alpha is ignored
        return _rgb_to_gray(a, path, "BGR")
    raise ImageError(f"{path}: unsupported pixel array shape {a.shape}")


def _check_pixels(path: Path, h: int, w: int, max_pixels: int, frames: int = 1, samples: int = 1) -> None:
    """``--max-image-pixels`` counts every sample the decoder would produce: frames x rows x columns x
    samples per pixel, checked from the header before any decoding."""
    if h < 1 or w < 1:
        raise ImageError(f"{path}: image has no pixels ({w}x{h})")
    if frames < 1 or samples < 1:
        raise ImageError(f"{path}: image has no pixels ({frames} frames, {samples} samples per pixel)")
    n = frames * h * w * samples
    if n > max_pixels:
        what = (
            f"{w}x{h}"
            + (f" x {frames} frames" if frames > 1 else "")
            + (f" x {samples} samples" if samples > 1 else "")
        )
        raise ImageError(f"{path}: image {what} ({n:,} pixel values) exceeds --max-image-pixels ({max_pixels:,})")


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
    _check_pixels(path, h, w, max_pixels, frames=frames, samples=bands)
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
    a = _gray(a, path)
    return _to_uint8(a, path)


_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT")
#: header integers that pydicom's decoders read; text values ("512") are normalised, garbage is a reject
_HEADER_INTS = (
    ("Rows", 0x00280010, "US", 0),
    ("Columns", 0x00280011, "US", 0),
    ("SamplesPerPixel", 0x00280002, "US", 1),
    ("NumberOfFrames", 0x00280008, "IS", 1),
    ("BitsAllocated", 0x00280100, "US", None),
    ("BitsStored", 0x00280101, "US", None),
    ("HighBit", 0x00280102, "US", None),
    ("PixelRepresentation", 0x00280103, "US", None),
    ("PlanarConfiguration", 0x00280006, "US", None),
)


def _first(value):
    """First value of a multi-valued element (several windows...), else the value."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return value[0] if len(value) else None
    return value


def _header_int(ds, keyword: str, default, path: Path):
    """An integer header value, accepting text ("512", b"512 "); raises ImageError naming the value."""
    try:
        elem = ds[keyword] if keyword in ds else None
        value = None if elem is None else _first(elem.value)
    except Exception as e:  # pydicom converts lazily: a garbage value raises on access
        raise ImageError(f"{path}: {keyword} cannot be read ({type(e).__name__}: {e})") from None
    if value is None or value == "" or value == b"":
        return default
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        f = float(str(value).strip())
        if not np.isfinite(f) or f != int(f):
            raise ValueError
        return int(f)
    except (ValueError, OverflowError):
        raise ImageError(f"{path}: {keyword} {value!r} is not an integer") from None


def _header_float(ds, keyword: str, path: Path, what: str) -> float | None:
    """A decimal header value (DS, possibly text or multi-valued -> the first); None when absent.
    Raises ImageError when present but not a finite number."""
    if keyword not in ds:
        return None
    try:
        value = _first(ds[keyword].value)
    except Exception as e:
        raise ImageError(f"{path}: {keyword} cannot be read ({type(e).__name__}: {e})") from None
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    try:
        f = float(str(value).strip())
    except ValueError:
        raise ImageError(f"{path}: {keyword} {value!r} is not a number ({what})") from None
    if not np.isfinite(f):
        raise ImageError(f"{path}: {keyword} {value!r} is not finite ({what})")
    return f


def _normalise_header(ds, path: Path) -> dict:
    """Validate and normalise the integer header values in place (text -> int with the standard VR), so
    that pydicom's decoders see well-typed values. Returns {keyword: int or None}."""
    out = {}
    for keyword, tag, vr, default in _HEADER_INTS:
        v = _header_int(ds, keyword, default, path)
        out[keyword] = v
        if keyword in ds and v is not None:
            try:
                ok = ds[keyword].VR == vr and ds[keyword].value == v
            except Exception:
                ok = False
            if not ok:
                del ds[keyword]
                ds.add_new(tag, vr, v)
    return out


def _modality_lut(a: np.ndarray, ds, path: Path) -> np.ndarray:
    """Modality LUT (a LUT sequence, or RescaleSlope/Intercept). Bad values are a reject."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        try:
            out = apply_modality_lut(a, ds)
        except Exception as e:
            raise ImageError(f"{path}: malformed Modality LUT Sequence ({type(e).__name__}: {e})") from None
        if out.shape != a.shape:
            raise ImageError(f"{path}: malformed Modality LUT Sequence (output shape {out.shape})")
        return out
    slope = _header_float(ds, "RescaleSlope", path, "Modality LUT")
    intercept = _header_float(ds, "RescaleIntercept", path, "Modality LUT")
    if slope is None and intercept is None:
        return a
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    if slope == 1 and intercept == 0:
        return a  # the identity: no float copy of a large image
    if slope == 0:
        raise ImageError(f"{path}: RescaleSlope is 0 (every pixel would have the same value)")
    with np.errstate(over="ignore", invalid="ignore"):
        out = a.astype(np.float64) * slope + intercept
    if not np.isfinite(out).all():
        raise ImageError(
            f"{path}: pixel values are not finite after RescaleSlope {slope:g} / RescaleIntercept {intercept:g}"
        )
    return out


def _voi_lut(a: np.ndarray, ds, path: Path) -> np.ndarray:
    """VOI LUT: the first VOI LUT Sequence item, else the first window (centre/width; LINEAR,
    LINEAR_EXACT or SIGMOID). A malformed LUT sequence is a reject; an unusable window (width <= 0, text
    that is not a number, or a window that misses every pixel value) is ignored: the full range is used."""
    if "VOILUTSequence" in ds:
        from pydicom.pixels import apply_voi

        try:
            out = apply_voi(a, ds, index=0)
        except Exception as e:
            raise ImageError(f"{path}: malformed VOI LUT Sequence ({type(e).__name__}: {e})") from None
        if out.shape != a.shape:
            raise ImageError(f"{path}: malformed VOI LUT Sequence (output shape {out.shape})")
        return out
    try:
        c = _header_float(ds, "WindowCenter", path, "VOI window")
        w = _header_float(ds, "WindowWidth", path, "VOI window")
    except ImageError:
        return a
    if c is None or w is None or w <= 0:
        return a
    func = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    # integer pixels (<= 32 bits) are exact in float64 but float32 is enough for a window and half the memory
    x = a if a.dtype.kind == "f" else a.astype(np.float32 if a.dtype.itemsize <= 2 else np.float64)
    if func == "SIGMOID":
        with np.errstate(over="ignore"):
            return 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if func == "LINEAR_EXACT":
        lo, hi = c - w / 2, c + w / 2
    else:  # LINEAR (the default; anything unknown is treated as LINEAR)
        if w < 1:
            return a
        lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    if hi <= lo or x.max() <= lo or x.min() >= hi:
        return a  # a window that misses the data entirely would give a blank image: use the full range
    return np.clip(x, lo, hi)


def _low_bits_to_8(a: np.ndarray, bits: int | None) -> np.ndarray:
    """uint8 pixels that use fewer than 8 bits (BitsStored 1: segmentation-like masks; 8-bit with BitsStored 2)
    scaled to the full 0..255 range, so they are not stored nearly black; anything else is unchanged."""
    if a.dtype != np.uint8 or not bits or bits >= 8:
        return a
    top = (1 << bits) - 1
    return ((np.minimum(a, top).astype(np.uint16) * 255 + top // 2) // top).astype(np.uint8)


def _read_dicom(path: Path, max_pixels: int) -> tuple[np.ndarray, str | None]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.uid import ImplicitVRLittleEndian

    try:
        # defer_size: PixelData stays on disk until the header has been checked against --max-image-pixels
        ds = pydicom.dcmread(str(path), force=True, defer_size="256 KB")
    except (
        InvalidDicomError,
        OSError,
        ValueError,
        EOFError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        struct_error,
        UnicodeError,
        OverflowError,
    ) as e:
        raise ImageError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from None
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ImageError(f"{path}: float pixel data (parametric map) is not an X-ray image")
        raise ImageError(f"{path}: DICOM has no PixelData (not an image)")
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        # no preamble / File Meta (ACR-NEMA): the standard default is implicit VR little endian
        if meta is None:
            ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    h = _normalise_header(ds, path)
    rows, cols, frames, samples = h["Rows"], h["Columns"], h["NumberOfFrames"], h["SamplesPerPixel"]
    if frames == 0:  # invalid but seen in the wild; pydicom reads it as one frame too
        frames = 1
        ds.NumberOfFrames = 1
    _check_pixels(path, rows, cols, max_pixels, frames=frames, samples=samples)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:  # absent or empty: the only reading that fits the sample count
        photometric = "MONOCHROME2" if samples == 1 else "RGB"
        ds.PhotometricInterpretation = photometric
    if photometric not in ("MONOCHROME1", "MONOCHROME2") + _COLOUR:
        raise ImageError(
            f"{path}: PhotometricInterpretation {photometric} is not supported "
            f"(supported: MONOCHROME1, MONOCHROME2, RGB, YBR_*)"
        )
    mono = photometric.startswith("MONO")
    if samples != (1 if mono else 3):
        raise ImageError(
            f"{path}: PhotometricInterpretation {photometric} with SamplesPerPixel {samples} "
            f"(expected {1 if mono else 3}): inconsistent header"
        )
    try:
        if frames > 1:
            ds.pixel_array_options(index=0)  # multi-frame: decode only the first frame
        a = ds.pixel_array
    except MemoryError:
        raise
    except Exception as e:  # the decoders raise many types for broken data
        ts = ds.file_meta.get("TransferSyntaxUID", "?")
        name = getattr(ts, "name", str(ts))
        raise ImageError(
            f"{path}: cannot decode pixel data (transfer syntax {name}; {type(e).__name__}: {e})"
        ) from None
    expected = (rows, cols) if mono else (rows, cols, 3)
    if a.shape != expected:
        raise ImageError(f"{path}: decoded pixel array has shape {a.shape}, expected {expected} from the header")
    if mono:
        a = _modality_lut(a, ds, path)
        a = _voi_lut(a, ds, path)
        a = _to_uint8(_low_bits_to_8(a, h["BitsStored"]), path)
        if photometric == "MONOCHROME1":
            a = 255 - a  # MONOCHROME1: low values are bright; invert so bone is bright
    else:
        # pydicom returns RGB for colour photometrics (it converts YBR by default)
        a = _rgb_to_gray(a, path, "RGB")
        _to_uint8(a, path)  # a blank colour image is a reject too
    try:
        view = ds.get("ViewPosition", None)
        view = str(_first(view)).strip().upper() or None if view is not None else None
    except Exception:
        view = None
    return a, view


def is_dicom(data: bytes, path: Path) -> bool:
    return (len(data) > 132 and data[128:132] == b"DICM") or path.suffix.lower() in (".dcm", ".dicom")


def read_gray(
    path: str | Path, min_side: int | None = None, max_pixels: int = ImageSettings.max_pixels
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
