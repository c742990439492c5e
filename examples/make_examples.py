"""Regenerate the demo's sample data in examples/ (committed; a few MB).

Real images: the 12 NIH ChestX-ray14 PNGs of the shared fixtures (public domain; Wang et al., CVPR 2017),
downsized. Everything else is synthetic but keeps the real files' formats and quirks (../shared/FORMATS.md):

* ``mimic/``   a MIMIC-CXR-JPG-style root: ``files/pNN/pNNNNNNNN/sNNNNNNNN.txt`` reports written by
  examples/synth_reports.py (banner, one leading space per line, wrapped lines, header variants, ``___``),
  ``sNNNNNNNN/<dicom_id>.jpg`` images, one study as DICOM (MONOCHROME1, 12 bits stored), and
  ``mimic-cxr-2.0.0-{metadata,split,chexpert}.csv.gz`` with the real column sets (labels in a shuffled
  column order, StudyTime as a float that lost its leading zero, blank ViewPosition).
* ``chexpert/`` ``train.csv``/``valid.csv`` with the real 19-column header, ``Path`` under
  ``CheXpert-v1.0-small/``, views grouped by study, Sex ``Unknown``, Age 0, AP/PA ``LL`` and blank for
  laterals, labels 1.0/0.0/-1.0/blank; JPEG images under ``chexpert/CheXpert-v1.0-small/``.
* ``nih/``     ``Data_Entry_2017_v2020.csv`` with the real header (bracketed names containing commas),
  real rows of the 12 images plus synthetic rows for copies; ``images/*.png`` (one kept RGBA, as real).

Usage: python examples/make_examples.py [--src ../shared/fixtures/nih_cxr14]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import random
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from synth_reports import make_report  # noqa: E402

from cxrprep.labels import CHEXPERT_CSV_LABELS, CHEXPERT_CSV_META, CHEXPERT_LABELS  # noqa: E402

CHEXPERT_HEADER = [*CHEXPERT_CSV_META, *CHEXPERT_CSV_LABELS]
MIMIC_LABELS = list(CHEXPERT_LABELS)
SHORT = 256  # demo images: shorter side in pixels


def _load_real(src: Path) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted(src.glob("*.png")):
        a = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        h, w = a.shape
        s = SHORT / min(h, w)
        out[p.name] = cv2.resize(a, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    if len(out) != 12:
        raise SystemExit(f"expected the 12 NIH PNGs in {src}, found {len(out)}")
    return out


def _variant(a: np.ndarray, rng: random.Random, lateral: bool = False) -> np.ndarray:
    """A different-looking copy of a real image (flip/crop/gamma), so studies do not share pixels."""
    if lateral:  # not a real lateral, but a visibly different second view
        a = cv2.flip(a, 1)
        a = a[:, a.shape[1] // 8 : -a.shape[1] // 8]
    g = rng.uniform(0.8, 1.25)
    return np.clip(255 * (a / 255.0) ** g, 0, 255).astype(np.uint8)


def _jpg(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), a, [cv2.IMWRITE_JPEG_QUALITY, 90])


def _gz_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    # mtime=0: the same inputs give byte-identical .gz files
    with open(path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
        g.write(buf.getvalue().encode())


def _dicom_mono1(path: Path, a: np.ndarray) -> None:
    """A MONOCHROME1, 12-bit DICOM of a real image (as CR plates store it), with a window."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    px = (4095 - (a.astype(np.uint16) * 16)).astype(np.uint16)  # inverted: MONOCHROME1
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.PatientName = "Demo^Patient"  # must never reach a shard
    ds.PatientID = "DEMO123"
    ds.ViewPosition = "PA"
    ds.Rows, ds.Columns = px.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = px.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def make_mimic(root: Path, imgs: dict[str, np.ndarray], rng: random.Random) -> None:
    names = sorted(imgs)
    meta, split, labels = [], [], []
    shuffled = MIMIC_LABELS[:]
    rng.shuffle(shuffled)  # real files' label column order is not guaranteed: readers must use names
    n_subjects, k = 10, 0
    for si in range(n_subjects):
        subject = f"100{si:05d}"
        sp = "validate" if si == 8 else "test" if si == 9 else "train"
        for st in range(2 if si < 5 else 1):
            study = f"5{si:03d}{st:04d}"
            report = make_report(rng)
            rpath = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
            rpath.parent.mkdir(parents=True, exist_ok=True)
            rpath.write_text(report)
            views = ["PA", "LATERAL"] if (si + st) % 3 else ["AP"]
            if si == 3 and st == 1:
                views = ["PA", ""]  # blank ViewPosition occurs in the real metadata
            for vi, view in enumerate(views):
                dicom_id = "-".join(f"{rng.getrandbits(32):08x}" for _ in range(5))
                a = _variant(imgs[names[k % len(names)]], rng, lateral=view == "LATERAL")
                k += 1
                ipath = rpath.with_suffix("") / f"{dicom_id}.jpg"
                if si == 2 and st == 0 and vi == 0:
                    _dicom_mono1(ipath.with_suffix(".dcm"), a)
                else:
                    _jpg(ipath, a)
                time = rng.choice([213014.531, 80556.875, 101500.0])
                meta.append(
                    [
                        dicom_id,
                        subject,
                        study,
                        "CHEST (PA AND LAT)",
                        view,
                        a.shape[0],
                        a.shape[1],
                        21800506 + st,
                        time,
                        "CHEST (PA AND LAT)",
                        {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral"}.get(view, ""),
                        "Erect" if view else "",
                    ]
                )
                split.append([dicom_id, study, subject, sp])
            vals = []
            for _name in shuffled:
                r = rng.random()
                vals.append("1.0" if r < 0.2 else "0.0" if r < 0.35 else "-1.0" if r < 0.42 else "")
            labels.append([subject, study] + vals)
    # one report whose images are missing on disk (the metadata lists it): a reject in the demo
    _gz_csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        [
            "dicom_id",
            "subject_id",
            "study_id",
            "PerformedProcedureStepDescription",
            "ViewPosition",
            "Rows",
            "Columns",
            "StudyDate",
            "StudyTime",
            "ProcedureCodeSequence_CodeMeaning",
            "ViewCodeSequence_CodeMeaning",
            "PatientOrientationCodeSequence_CodeMeaning",
        ],
        meta,
    )
    _gz_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split)
    _gz_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id"] + shuffled, labels)
    # an empty report file: real corpora have them; it must become a reject, not vanish
    (root / "files" / "p10" / "p10000009" / "s50090099.txt").write_text("")


def make_chexpert(root: Path, imgs: dict[str, np.ndarray], rng: random.Random) -> None:
    names = sorted(imgs)
    base = "CheXpert-v1.0-small"
    rows = {"train": [], "valid": []}
    k = 0
    for pi in range(1, 13):
        part = "valid" if pi > 10 else "train"
        patient = f"patient{(64540 + pi) if part == 'valid' else pi:05d}"
        sex = "Unknown" if pi == 4 else rng.choice(["Male", "Female"])
        age = 0 if pi == 5 else rng.randint(20, 90)
        for st in range(1, (3 if pi <= 3 else 2)):
            nviews = 2 if pi % 2 else 1
            labs = []  # CheXpert labels come from the study's report: the same for every view
            for name in CHEXPERT_HEADER[5:]:
                r = rng.random()
                if part == "valid":
                    labs.append("1.0" if r < 0.25 else "0.0")
                elif name == "No Finding":
                    labs.append("1.0" if r < 0.15 else "")
                else:
                    labs.append("1.0" if r < 0.18 else "0.0" if r < 0.3 else "-1.0" if r < 0.38 else "")
            for v in range(1, nviews + 1):
                lateral = v == 2
                rel = f"{base}/{part}/{patient}/study{st}/view{v}_{'lateral' if lateral else 'frontal'}.jpg"
                a = _variant(imgs[names[k % len(names)]], rng, lateral=lateral)
                k += 1
                _jpg(root / rel, a)
                appa = "" if lateral else ("LL" if pi == 6 else rng.choice(["AP", "PA"]))
                rows[part].append([rel, sex, age, "Lateral" if lateral else "Frontal", appa] + labs)
    # one "5x200-style" frontal study per competition task: that task 1, every other observation 0
    for ti, task in enumerate(["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]):
        rel = f"{base}/train/patient{20 + ti:05d}/study1/view1_frontal.jpg"
        _jpg(root / rel, _variant(imgs[names[(k + ti) % len(names)]], rng))
        labs = ["" if n == "No Finding" else "1.0" if n == task else "0.0" for n in CHEXPERT_HEADER[5:]]
        rows["train"].append([rel, "Female", 60 + ti, "Frontal", "PA"] + labs)
    # a row whose image file does not exist: a counted reject, never silently dropped
    rows["train"].append(
        [f"{base}/train/patient00099/study1/view1_frontal.jpg", "Male", 50, "Frontal", "PA"]
        + ["" for _ in CHEXPERT_HEADER[5:]]
    )
    for part, rs in rows.items():
        with open(root / f"{part}.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(CHEXPERT_HEADER)
            w.writerows(rs)


def make_nih(root: Path, src: Path, imgs: dict[str, np.ndarray]) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, a in imgs.items():
        out = root / "images" / name
        if name == "00001369_000.png":  # keep the real quirk: RGBA with R=G=B, alpha 255
            rgba = cv2.cvtColor(a, cv2.COLOR_GRAY2BGRA)
            cv2.imwrite(str(out), rgba)
        else:
            cv2.imwrite(str(out), a)
    shutil.copyfile(src / "Data_Entry_2017_v2020_subset.csv", root / "Data_Entry_2017_v2020.csv")
    # official-style list files (one Image Index per line), patient-disjoint
    names = sorted(imgs)
    (root / "train_val_list.txt").write_text("".join(n + "\n" for n in names[:9]))
    (root / "test_list.txt").write_text("".join(n + "\n" for n in names[9:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--src",
        type=Path,
        default=HERE.parent.parent / "shared" / "fixtures" / "nih_cxr14",
        help="folder with the 12 NIH PNGs and Data_Entry_2017_v2020_subset.csv",
    )
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    imgs = _load_real(args.src)
    for sub in ("mimic", "chexpert", "nih"):
        shutil.rmtree(args.out / sub, ignore_errors=True)
        (args.out / sub).mkdir(parents=True)
    make_mimic(args.out / "mimic", imgs, random.Random(args.seed))
    make_chexpert(args.out / "chexpert", imgs, random.Random(args.seed + 1))
    make_nih(args.out / "nih", args.src, imgs)
    print(f"wrote sample data under {args.out}")


if __name__ == "__main__":
    main()
