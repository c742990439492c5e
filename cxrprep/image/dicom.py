"""DICOM -> 8-bit MONOCHROME2: header normalisation, Modality and VOI LUTs, MONOCHROME1 inversion, colour to
grey, first frame of a multi-frame file. The rules are listed in cxrprep/image/process.py."""

from __future__ import annotations

from pathlib import Path
from struct import error as struct_error

import numpy as np

from cxrprep.image.pixels import check_pixels, rgb_to_gray, to_uint8
from cxrprep.image.settings import ImageError

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


def _header_value(ds, keyword: str, path: Path):
    """A header element's (first) value, bytes decoded as Latin-1; None when absent or empty. Raises
    ImageError when pydicom cannot read it."""
    try:
        value = _first(ds[keyword].value) if keyword in ds else None
    except Exception as e:  # pydicom converts lazily: a garbage value raises on access
        raise ImageError(f"{path}: {keyword} cannot be read ({type(e).__name__}: {e})") from None
    if value is None or value == "" or value == b"":
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _header_int(ds, keyword: str, default, path: Path):
    """An integer header value, accepting text ("512", b"512 "); raises ImageError naming the value."""
    value = _header_value(ds, keyword, path)
    if value is None:
        return default
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
    value = _header_value(ds, keyword, path)
    if value is None:
        return None
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


def _open_dicom(path: Path):
    """The dataset with its header read (PixelData deferred); a missing transfer syntax is the default one."""
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
    return ds


def _photometric(ds, path: Path, samples: int) -> str:
    """PhotometricInterpretation, checked against SamplesPerPixel (absent or empty: the one that fits)."""
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
    return photometric


def _view_position(ds) -> str | None:
    try:
        view = ds.get("ViewPosition", None)
        view = str(_first(view)).strip().upper() or None if view is not None else None
    except Exception:
        view = None
    return view


def _low_bits_to_8(a: np.ndarray, bits: int | None) -> np.ndarray:
    """uint8 pixels that use fewer than 8 bits (BitsStored 1: segmentation-like masks; 8-bit with BitsStored 2)
    scaled to the full 0..255 range, so they are not stored nearly black; anything else is unchanged."""
    if a.dtype != np.uint8 or not bits or bits >= 8:
        return a
    top = (1 << bits) - 1
    return ((np.minimum(a, top).astype(np.uint16) * 255 + top // 2) // top).astype(np.uint8)


def read_dicom(path: Path, max_pixels: int) -> tuple[np.ndarray, str | None]:
    """Decode the first frame of a DICOM file to 8-bit MONOCHROME2; return it and its ViewPosition."""
    ds = _open_dicom(path)
    h = _normalise_header(ds, path)
    rows, cols, frames, samples = h["Rows"], h["Columns"], h["NumberOfFrames"], h["SamplesPerPixel"]
    if frames == 0:  # invalid but seen in the wild; pydicom reads it as one frame too
        frames = 1
        ds.NumberOfFrames = 1
    check_pixels(path, rows, cols, max_pixels, frames=frames, samples=samples)
    photometric = _photometric(ds, path, samples)
    mono = photometric.startswith("MONO")
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
        a = to_uint8(_low_bits_to_8(a, h["BitsStored"]), path)
        if photometric == "MONOCHROME1":
            a = 255 - a  # MONOCHROME1: low values are bright; invert so bone is bright
    else:
        # pydicom returns RGB for colour photometrics (it converts YBR by default)
        a = rgb_to_gray(a, path, "RGB")
        to_uint8(a, path)  # a blank colour image is a reject too
    return a, _view_position(ds)
