"""Image decoding and processing on real fixtures and generated DICOMs."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid
from typer.testing import CliRunner

from cxrprep.cli import app
from cxrprep.images import ImageError, ImageSettings, process_image, read_gray, resize_short
from cxrprep.shards import ShardDataset


def _phantom(h=64, w=64) -> np.ndarray:
    """Dark lungs left/right, bright 'spine' column in the centre: intensity in 'bone is bright' terms."""
    a = np.full((h, w), 0.2, np.float32)
    a[:, w // 2 - 6: w // 2 + 6] = 0.9
    return a


def _bone_bright(a: np.ndarray) -> bool:
    h, w = a.shape
    a = a.astype(np.int32)
    rows = slice(h * 2 // 5, h * 3 // 5)
    spine = a[rows, w * 9 // 20: w * 11 // 20].mean()
    lungs = (a[rows, w // 5: w * 3 // 10].mean() + a[rows, w * 7 // 10: w * 4 // 5].mean()) / 2
    return spine > lungs + 30


def _dicom(path, px, photometric="MONOCHROME2", bits=12, signed=False, extra=None, rle=False):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientName = "Secret^Name"
    ds.PatientID = "SECRETID42"
    ds.Rows, ds.Columns = px.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.PixelData = px.astype(np.int16 if signed else np.uint16).tobytes()
    if rle:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.save_as(path, enforce_file_format=True)
    return path


def test_real_fixtures_right_way_up(data_dir):
    from pydicom.data import get_testdata_file

    files = [data_dir / "dicom" / "barre_CR_MONO1_10bit_no_preamble.dcm",  # MONOCHROME1, no preamble
             data_dir / "dicom" / "nih_cxr14_DX_uncompressed.dcm",
             data_dir / "nih_cxr14" / "00001369_000.png",  # RGBA
             get_testdata_file("RG1_UNCR.dcm"), get_testdata_file("RG1_J2KI.dcm")]
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
    png = process_image(data_dir / "nih_cxr14" / "00001369_000.png", "x", "PA",
                        ImageSettings(size=128, format="png", clahe=False))
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
    _dicom(src / "mono1.dcm", (4095 - _phantom() * 4095).astype(np.uint16), "MONOCHROME1",
           extra=dict(WindowCenter=2048, WindowWidth=4096, ViewPosition="AP"))
    (src / "zero.dcm").write_bytes(b"")
    cv2.imwrite(str(src / "c.png"), (_phantom() * 255).astype(np.uint8))
    out = tmp_path / "shards"
    r = CliRunner().invoke(app, ["images", str(src), "--out", str(out), "--dataset", "ev", "--workers", "1",
                                 "--size", "32", "--max-failed", "5"])
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
