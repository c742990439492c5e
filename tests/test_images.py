"""Image decoding and processing on real fixtures and generated DICOMs."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from helpers import cli_args
from helpers import phantom as _phantom
from helpers import write_dicom as _dicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from typer.testing import CliRunner

from cxrprep.cli.app import app
from cxrprep.image.process import (
    ImageError,
    ImageSettings,
    process_image,
    process_study_images,
    read_gray,
    resize_short,
)
from cxrprep.shards import ShardDataset


def _bone_bright(a: np.ndarray) -> bool:
    h, w = a.shape
    a = a.astype(np.int32)
    rows = slice(h * 2 // 5, h * 3 // 5)
    spine = a[rows, w * 9 // 20 : w * 11 // 20].mean()
    lungs = (a[rows, w // 5 : w * 3 // 10].mean() + a[rows, w * 7 // 10 : w * 4 // 5].mean()) / 2
    return spine > lungs + 30


def test_real_fixtures_right_way_up(data_dir):
    from pydicom.data import get_testdata_file

    files = [
        data_dir / "dicom" / "barre_CR_MONO1_10bit_no_preamble.dcm",  # MONOCHROME1, no preamble
        data_dir / "dicom" / "nih_cxr14_DX_uncompressed.dcm",
        data_dir / "nih_cxr14" / "00001369_000.png",  # RGBA
        get_testdata_file("RG1_UNCR.dcm"),
        get_testdata_file("RG1_J2KI.dcm"),
    ]
    for f in files:
        a, _ = read_gray(f)
        assert a.dtype == np.uint8 and a.ndim == 2 and a.max() > 200 and a.min() < 30, f
        assert _bone_bright(a), f"{f}: mediastinum should be brighter than lung after decoding"


def test_no_preamble_view_and_rgba(data_dir):
    a, view = read_gray(data_dir / "dicom" / "barre_CR_MONO1_10bit_no_preamble.dcm")
    assert a.shape == (440, 440) and view == "PA"
    raw = cv2.imread(str(data_dir / "nih_cxr14" / "00001369_000.png"), cv2.IMREAD_UNCHANGED)
    assert raw.shape[2] == 4  # the quirk is real
    g, _ = read_gray(data_dir / "nih_cxr14" / "00001369_000.png")
    assert np.array_equal(g, raw[:, :, 0])  # R=G=B, alpha dropped


def test_j2k_lossless_equals_uncompressed():
    from pydicom.data import get_testdata_file

    a, _ = read_gray(get_testdata_file("RG1_UNCR.dcm"))
    b, _ = read_gray(get_testdata_file("RG1_J2KR.dcm"))
    assert a.shape == (1955, 1841) and np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["mono1_window", "voi_lut_seq", "signed", "rle", "rescale"])
def test_generated_dicoms(tmp_path, kind):
    ph = _phantom()
    if kind == "mono1_window":  # 12-bit MONOCHROME1 with a window: bone stored dark
        px = (4095 - ph * 4095).astype(np.uint16)
        p = _dicom(tmp_path / "a.dcm", px, "MONOCHROME1", extra=dict(WindowCenter=2048, WindowWidth=4096))
    elif kind == "voi_lut_seq":
        px = (ph * 4095).astype(np.uint16)
        item = Dataset()
        item.LUTDescriptor = [4096, 0, 16]
        item.add_new("LUTData", "OW", (np.sqrt(np.arange(4096) / 4095) * 65535).astype("<u2").tobytes())
        p = _dicom(tmp_path / "a.dcm", px, extra=dict(VOILUTSequence=[item]))
    elif kind == "signed":
        px = (ph * 2000 - 1000).astype(np.int16)
        p = _dicom(tmp_path / "a.dcm", px, signed=True)
    elif kind == "rle":
        px = (ph * 4095).astype(np.uint16)
        p = _dicom(tmp_path / "a.dcm", px, rle=True)
        assert pydicom.dcmread(p).file_meta.TransferSyntaxUID == RLELossless
    else:
        px = (ph * 1000).astype(np.uint16)
        p = _dicom(tmp_path / "a.dcm", px, extra=dict(RescaleSlope=2, RescaleIntercept=-1024))
    a, _ = read_gray(p)
    assert a.shape == (64, 64) and a.dtype == np.uint8
    assert _bone_bright(a) and a.max() == 255 and a.min() == 0


def test_unsupported_photometric(tmp_path):
    p = _dicom(tmp_path / "p.dcm", (_phantom() * 255).astype(np.uint16), "PALETTE COLOR", bits=8)
    with pytest.raises(ImageError, match="PhotometricInterpretation PALETTE COLOR is not supported"):
        read_gray(p)


def test_png16_and_reduced_jpeg(tmp_path):
    ph = _phantom(400, 300)
    cv2.imwrite(str(tmp_path / "a.png"), (ph * 4000).astype(np.uint16))
    a, _ = read_gray(tmp_path / "a.png")
    assert a.dtype == np.uint8 and _bone_bright(a)
    big = cv2.resize((ph * 255).astype(np.uint8), (1200, 1600))
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    reduced, _ = read_gray(tmp_path / "big.jpg", min_side=256)
    assert reduced.shape == (400, 300)  # decoded at 1/4: still >= 256 on the short side
    full, _ = read_gray(tmp_path / "big.jpg", min_side=None)
    assert full.shape == (1600, 1200)
    rgb = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
    cv2.imwrite(str(tmp_path / "rgb.jpg"), rgb)
    assert read_gray(tmp_path / "rgb.jpg")[0].ndim == 2


def test_process_resize_never_upscales(tmp_path, data_dir):
    s = ImageSettings(size=256)
    img = process_image(data_dir / "nih_cxr14" / "00001369_000.png", "x", None, s)
    assert (img["height"], img["width"]) == (256, 256) and img["image"][:3] == b"\xff\xd8\xff"
    assert img["image_clahe"] is not None and img["image_clahe"] != img["image"]
    small = resize_short(np.zeros((100, 50), np.uint8), 512)
    assert small.shape == (100, 50)
    png = process_image(
        data_dir / "nih_cxr14" / "00001369_000.png", "x", "PA", ImageSettings(size=128, format="png", clahe=False)
    )
    assert png["image"][:4] == b"\x89PNG" and png["image_clahe"] is None and png["view"] == "PA"
    assert (png["height"], png["width"]) == (128, 128)


def test_bad_inputs(tmp_path, data_dir):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_gray(tmp_path / "empty.png")
    good = (data_dir / "nih_cxr14" / "00001369_000.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 3])
    with pytest.raises(ImageError):
        read_gray(tmp_path / "trunc.png")
    (tmp_path / "notes.dcm").write_text("this is not an image at all " * 20)
    with pytest.raises(ImageError):
        read_gray(tmp_path / "notes.dcm")
    with pytest.raises(ImageError, match="exceeds --max-image-pixels"):
        read_gray(data_dir / "nih_cxr14" / "00001369_000.png", max_pixels=1000)
    with pytest.raises(ImageError, match="exceeds --max-image-pixels"):
        read_gray(data_dir / "dicom" / "nih_cxr14_DX_uncompressed.dcm", max_pixels=1000)
    with pytest.raises(ValueError, match="--size"):
        ImageSettings(size=8)


def test_images_command_folder_csv_privacy_and_rejects(tmp_path, data_dir):
    src = tmp_path / "src"
    src.mkdir()
    _dicom(
        src / "mono1.dcm",
        (4095 - _phantom() * 4095).astype(np.uint16),
        "MONOCHROME1",
        extra=dict(WindowCenter=2048, WindowWidth=4096, ViewPosition="AP"),
    )
    (src / "zero.dcm").write_bytes(b"")
    cv2.imwrite(str(src / "c.png"), (_phantom() * 255).astype(np.uint8))
    out = tmp_path / "shards"
    r = CliRunner().invoke(
        app,
        cli_args("images", src, out=out, dataset="ev", workers=1, size=32, max_failed=5),
    )
    assert r.exit_code == 0, r.output
    assert "inputs seen 3 = rows written 2 + rejects 1" in r.output
    ds = ShardDataset(out / "ev")
    rows = {row["study_id"]: row for row in ds.iter_rows()}
    assert rows["mono1"]["images"][0]["view"] == "AP"
    blob = b"".join(p.read_bytes() for p in (out / "ev").glob("*.parquet"))
    assert b"SECRETID42" not in blob and b"Secret^Name" not in blob
    # too many failures -> exit 1, but the good rows were written
    r = CliRunner().invoke(app, ["images", str(src), "--out", str(out), "--dataset", "ev2", "--max-failed", "0"])
    assert r.exit_code == 1 and (out / "ev2" / "manifest.json").exists()
    # CSV with labels
    with open(tmp_path / "list.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "study_id", "split", "Pneumonia"])
        w.writerow(["src/c.png", "c1", "test", "1"])
        w.writerow(["src/mono1.dcm", "m1", "validate", "0"])
    r = CliRunner().invoke(app, ["images", str(tmp_path / "list.csv"), "--out", str(out), "--dataset", "rsna"])
    assert r.exit_code == 0, r.output
    ds = ShardDataset(out / "rsna")
    assert ds.label_names == ["Pneumonia"]
    assert {row["study_id"]: row["labels"] for row in ds.iter_rows()} == {"c1": [1], "m1": [0]}
    with open(tmp_path / "bad.csv", "w") as f:
        f.write("path,Pneumonia\nsrc/c.png,maybe\n")
    r = CliRunner().invoke(app, ["images", str(tmp_path / "bad.csv"), "--out", str(out)])
    assert r.exit_code == 2 and "'maybe'" in r.output


# -- robustness (issue 13): every odd file is a row or a clean reject -----------------------------------
def _raw_dicom(
    path,
    pixel_bytes,
    rows,
    cols,
    photometric="MONOCHROME2",
    samples=1,
    frames=1,
    bits=8,
    ts=None,
    extra=None,
    raw_elements=(),
):
    """A DICOM written element by element, so that headers can lie (text Rows, wrong samples, ...)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ts or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if samples > 1:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    for tag, vr, value in raw_elements:  # replace an element with another VR/value (e.g. Rows as text)
        if tag in ds:
            del ds[tag]
        ds.add_new(tag, vr, value)
    ds.PixelData = pixel_bytes
    if ts is not None and ts.is_encapsulated:
        ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def _patch_vr(path, tag, vr):
    """Rewrite the VR of an element written as LO, so that a DS/IS element can hold text pydicom would
    refuse to write ("abc" as WindowWidth)."""
    import struct

    data = path.read_bytes()
    key = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"LO"
    assert key in data
    path.write_bytes(data.replace(key, key[:4] + vr.encode(), 1))
    return path


def _lut_item(descriptor, data):
    item = Dataset()
    if descriptor is not None:
        item.LUTDescriptor = descriptor
    if data is not None:
        item.add_new("LUTData", "OW", data)
    return item


def _reject_or_image(p, **kw):
    """read_gray either decodes to a non-blank 2-D uint8 image or raises ImageError (never anything else)."""
    try:
        a, _ = read_gray(p, **kw)
    except ImageError as e:
        return str(e)
    assert a.dtype == np.uint8 and a.ndim == 2 and a.max() > a.min()
    return a


def test_multiframe_colour_first_frame(tmp_path):
    rgb = np.zeros((2, 32, 48, 3), np.uint8)
    rgb[0, :, :24] = (200, 30, 30)  # frame 0: left half reddish, right half black
    rgb[1] = 255
    p = _raw_dicom(tmp_path / "mf.dcm", rgb.tobytes(), 32, 48, "RGB", samples=3, frames=2)
    a, _ = read_gray(p)
    assert a.shape == (32, 48) and a[:, :24].min() > 50 and a[:, 24:].max() == 0
    p16 = _raw_dicom(
        tmp_path / "mf16.dcm", (rgb.astype(np.uint16) * 257).tobytes(), 32, 48, "RGB", samples=3, frames=2, bits=16
    )
    a16, _ = read_gray(p16)  # 16-bit is min-max scaled, 8-bit kept: same structure, other levels
    assert a16.shape == (32, 48) and a16[:, :24].min() > 50 and a16[:, 24:].max() == 0
    one = process_image(p, "mf", None, ImageSettings(size=32))
    assert (one["height"], one["width"]) == (32, 48)


def test_inconsistent_and_text_headers(tmp_path):
    ph = (_phantom() * 255).astype(np.uint8)
    # MONOCHROME2 with SamplesPerPixel 3: a clean reject naming both values
    p = _raw_dicom(tmp_path / "m3.dcm", np.repeat(ph[:, :, None], 3, 2).tobytes(), 64, 64, samples=3)
    assert "MONOCHROME2 with SamplesPerPixel 3" in _reject_or_image(p)
    # Rows as text: a number in text is used, garbage is a reject naming the value
    p = _raw_dicom(tmp_path / "rt.dcm", ph.tobytes(), 64, 64, raw_elements=[(0x00280010, "LO", "64")])
    assert _bone_bright(_reject_or_image(p))
    p = _raw_dicom(tmp_path / "rg.dcm", ph.tobytes(), 64, 64, raw_elements=[(0x00280010, "LO", "sixty")])
    assert "Rows 'sixty' is not an integer" in _reject_or_image(p)
    # WindowWidth 0 or text: the window is unusable and ignored (full range), never a crash
    for ww in ("0", "wide", "-5"):
        p = _raw_dicom(
            tmp_path / f"w{ww}.dcm",
            ph.tobytes(),
            64,
            64,
            raw_elements=[(0x00281050, "DS", "100"), (0x00281051, "LO", ww)],
        )
        a = _reject_or_image(p)
        assert not isinstance(a, str) and _bone_bright(a), (ww, a)
    # the same as real DS/IS elements holding text (as some modalities write them)
    for tag, vr, text, expect in (
        (0x00281051, "DS", "abc", None),
        (0x00281051, "DS", "0", None),
        (0x00281050, "DS", "nan", None),
        (0x00281053, "DS", "x", "RescaleSlope 'x'"),
        (0x00280008, "IS", "1.5", "NumberOfFrames 1.5 is not an integer"),
        (0x00280008, "IS", "-3", "no pixels"),
        (0x00280008, "IS", "0", None),
    ):
        p = _raw_dicom(
            tmp_path / "t.dcm",
            ph.tobytes(),
            64,
            64,
            raw_elements=[(0x00281050, "DS", "100"), (0x00281051, "DS", "100"), (tag, "LO", text)],
        )
        r = _reject_or_image(_patch_vr(p, tag, vr))
        if expect is None:
            assert not isinstance(r, str) and _bone_bright(r), (tag, text, r)
        else:
            assert isinstance(r, str) and expect in r, (tag, text, r)
    p = _raw_dicom(tmp_path / "np.dcm", ph.tobytes(), 64, 64, raw_elements=[(0x00280004, "CS", "")])
    assert _bone_bright(read_gray(p)[0])  # an empty PhotometricInterpretation with 1 sample: MONOCHROME2
    # a window that misses every value would be a blank image: the full range is used instead
    p = _raw_dicom(tmp_path / "miss.dcm", ph.tobytes(), 64, 64, extra=dict(WindowCenter=5000, WindowWidth=10))
    assert _bone_bright(read_gray(p)[0])


@pytest.mark.parametrize("seq", ["VOILUTSequence", "ModalityLUTSequence"])
@pytest.mark.parametrize("bad", ["two_values", "no_data", "no_descriptor", "short_data", "bits99", "text"])
def test_malformed_lut_sequences(tmp_path, seq, bad):
    ph = (_phantom() * 4095).astype(np.uint16)
    item = {
        "two_values": lambda: _lut_item([4096, 0], b"\0\0" * 4096),
        "no_data": lambda: _lut_item([4096, 0, 16], None),
        "no_descriptor": lambda: _lut_item(None, b"\0\0" * 4096),
        "short_data": lambda: _lut_item([4096, 0, 16], b"\1\0" * 3),
        "bits99": lambda: _lut_item([4096, 0, 99], b"\1\0" * 4096),
        "text": lambda: _lut_item(None, b"\0\0" * 8),
    }[bad]()
    if bad == "text":
        item.add_new(0x00283002, "LO", "many")  # LUTDescriptor as text
    p = _raw_dicom(tmp_path / "lut.dcm", ph.tobytes(), 64, 64, bits=16, extra={seq: [item]})
    r = _reject_or_image(p)
    name = {"VOILUTSequence": "VOI LUT Sequence", "ModalityLUTSequence": "Modality LUT Sequence"}[seq]
    assert isinstance(r, str) and f"malformed {name}" in r, r


@pytest.mark.parametrize("slope", ["NaN", "1e308", "inf", "abc", "0"])
def test_non_finite_rescale_is_a_reject(tmp_path, slope):
    ph = (_phantom() * 4095).astype(np.uint16)
    p = _raw_dicom(
        tmp_path / "s.dcm",
        ph.tobytes(),
        64,
        64,
        bits=16,
        raw_elements=[(0x00281053, "LO", slope), (0x00281052, "DS", "0")],
    )
    r = _reject_or_image(p)
    assert isinstance(r, str) and "RescaleSlope" in r, r
    # the same through the command: a reject, never an all-black good row
    ok, failed = process_study_images([(str(p), "s", None)], ImageSettings(size=32))
    assert ok == [] and "RescaleSlope" in failed[0][1]


def test_blank_images_are_rejects(tmp_path):
    cv2.imwrite(str(tmp_path / "black.png"), np.zeros((40, 40), np.uint8))
    p = _raw_dicom(tmp_path / "flat.dcm", np.full((64, 64), 7, np.uint8).tobytes(), 64, 64)
    for f in (tmp_path / "black.png", p):
        with pytest.raises(ImageError, match="blank image"):
            read_gray(f)


def test_frame_bomb_rejected_from_header_without_decoding(tmp_path, monkeypatch):
    """100 frames of 4096x4096 in RLE, a few KB on disk: --max-image-pixels counts every frame."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    # one RLE segment per frame whose content does not matter: nothing may decode it
    frame = np.array([1, 64] + [0] * 14, "<u4").tobytes() + b"\x81\x00" * 16  # RLE header: 1 segment at 64
    bomb = _raw_dicom(tmp_path / "bomb.dcm", encapsulate([frame] * 100), 4096, 4096, frames=100, ts=RLELossless)
    assert bomb.stat().st_size < 64_000

    def no_decoding(self):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoding))
    s = ImageSettings(size=64)
    assert s.max_pixels > 4096 * 4096  # one frame alone passes the default; 100 frames do not
    with pytest.raises(ImageError, match=r"x 100 frames \(1,677,721,600 pixel values\) exceeds --max-image-pixels"):
        process_image(bomb, "bomb", None, s)
    monkeypatch.undo()
    # a real multi-frame RLE file: the limit counts frames x rows x columns x samples
    frames = np.stack([(_phantom(128, 128) * 255).astype(np.uint8)] * 10)
    p = _raw_dicom(tmp_path / "mf.dcm", frames.tobytes(), 128, 128, frames=10)
    ds = pydicom.dcmread(p)
    ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.save_as(p)
    assert _bone_bright(read_gray(p, max_pixels=10 * 128 * 128)[0])
    with pytest.raises(ImageError, match="10 frames"):
        read_gray(p, max_pixels=10 * 128 * 128 - 1)
    rgb = cv2.cvtColor((_phantom(100, 100) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb)
    with pytest.raises(ImageError, match="3 samples"):
        read_gray(tmp_path / "rgb.png", max_pixels=100 * 100 * 2)


def test_special_and_oversized_files_are_rejects(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")  # reading it would block for ever
    for p, msg in (
        (tmp_path / "fifo.png", "not a regular file"),
        (Path("/dev/zero"), "not a regular file"),
        (tmp_path, "not a regular file"),
    ):
        with pytest.raises(ImageError, match=msg):
            read_gray(p)
    big = tmp_path / "big.dcm"
    with open(big, "wb") as f:
        f.truncate(4 * 1000 + 16 * 2**20 + 1)  # sparse: no disk used
    with pytest.raises(ImageError, match="more than any image within --max-image-pixels"):
        read_gray(big, max_pixels=1000)


def test_any_exception_is_a_reject(tmp_path, monkeypatch):
    import cxrprep.image.process as images

    def boom(*a, **k):
        raise RuntimeError("decoder exploded\nsecond line")

    monkeypatch.setattr(images, "read_gray", boom)
    ok, failed = process_study_images([("x.png", "x", None)], ImageSettings())
    assert ok == [] and failed == [("x.png", "x.png: RuntimeError: decoder exploded second line")]
