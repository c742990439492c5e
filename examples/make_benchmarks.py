"""Write small sample files of CXR-CLIP's external benchmarks under examples/benchmarks/, in the released
formats with their quirks (../shared/FORMATS.md 4-7), from the 12 real NIH images in examples/nih/images:

* rsna/stage_2_train_labels.csv (patientId,x,y,width,height,Target; one row per box, empty box fields for
  Target 0) + stage_2_train_images/{patientId}.dcm
* siim/train-rle.csv (header "ImageId, EncodedPixels" with the leading space; " -1" = no pneumothorax;
  several rows per ImageId) + dicom-images-train/<study UID>/<series UID>/<ImageId>.dcm (8-bit Secondary
  Capture, JPEG Baseline transfer syntax)
* vindr/annotations/image_labels_{train,test}.csv (image_id, rad_id, 28 columns; 3 readers per training
  image who sometimes disagree, 1 consensus row per test image) + {train,test}/<image_id>.dicom, half of
  them MONOCHROME1
* openi/ecgen-radiology/{N}.xml (NLMCXR XML: uId, AbstractText COMPARISON/INDICATION/FINDINGS/IMPRESSION,
  empty elements, MeSH, parentImage ids, XXXX tokens; one report without text, one broken file) +
  NLMCXR_png/CXR{N}_{k}_IM-....png

Deterministic: running it twice gives identical files. Usage: python examples/make_benchmarks.py
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).parent
OUT = HERE / "benchmarks"
SIDE = 64
sys.path.insert(0, str(HERE.parent))

VINDR = [
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Clavicle fracture",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Enlarged PA",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Lung cavity",
    "Lung cyst",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Other lesion",
    "COPD",
    "Lung tumor",
    "Pneumonia",
    "Tuberculosis",
    "Other diseases",
    "No finding",
]


def _images() -> list[np.ndarray]:
    out = []
    for p in sorted((HERE / "nih" / "images").glob("*.png")):
        a = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        out.append(cv2.resize(a, (SIDE, SIDE), interpolation=cv2.INTER_AREA))
    if not out:
        raise SystemExit("examples/nih/images/*.png not found")
    return out


def _img(imgs, k: int, positive: bool) -> np.ndarray:
    a = imgs[k % len(imgs)].astype(np.float32)
    if positive:  # a visible bright opacity in the right lower zone
        y, x = np.mgrid[0:SIDE, 0:SIDE]
        a += 70 * np.exp(-(((x - 0.3 * SIDE) ** 2 + (y - 0.7 * SIDE) ** 2) / (2 * (0.1 * SIDE) ** 2)))
    return np.clip(a, 0, 255).astype(np.uint8)


def _uid(*parts) -> str:
    return "1.2.826.0.1.3680043.8.498." + str(
        int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest(), 16) % 10**20
    )


def _dicom(path: Path, a: np.ndarray, mono1: bool = False, bits: int = 8, view: str = "PA", jpeg: bool = False) -> None:
    """An uncompressed DICOM, or with ``jpeg`` an 8-bit Secondary Capture whose pixels are one JPEG Baseline
    fragment (transfer syntax 1.2.840.10008.1.2.4.50), as the SIIM-ACR files are."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7" if bits == 8 else "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = _uid(path.name)
    meta.TransferSyntaxUID = JPEGBaseline8Bit if jpeg else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PatientID = "CR", view, path.stem[:16]
    ds.Rows, ds.Columns = a.shape
    ds.SamplesPerPixel = 1
    ds.PixelRepresentation = 0
    if bits == 8:
        px = (255 - a) if mono1 else a
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    else:
        px = a.astype(np.uint16) * 16
        px = (4095 - px) if mono1 else px
        px = px.astype(np.uint16)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    if jpeg:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(px), [cv2.IMWRITE_JPEG_QUALITY, 90])
        ds.PixelData = encapsulate([buf.tobytes()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
    else:
        ds.PixelData = np.ascontiguousarray(px).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _quota_ids(make_id, quotas: dict[str, int], split_of) -> list[tuple[str, str, int]]:
    """Ids whose hashed split fills ``quotas`` {split: n per class}: -> [(id, split, label)]."""
    need = {(s, lab): n for s, n in quotas.items() for lab in (0, 1)}
    out, i = [], 0
    while any(need.values()):
        pid = make_id(i)
        s = split_of(pid)
        lab = i % 2
        if need.get((s, lab), 0) > 0:
            need[(s, lab)] -= 1
            out.append((pid, s, lab))
        i += 1
    return sorted(out)


def _write_rows(path: Path, header: str, ids: list[tuple[str, str, int]], rows) -> None:
    """A label CSV: ``header``, then ``rows(k, id, label)`` (lines; it also writes the image) for each id."""
    lines = [header]
    for k, (i, _, lab) in enumerate(ids):
        lines += rows(k, i, lab)
    path.write_text("\n".join(lines) + "\n")


def make_rsna(imgs, rng: random.Random) -> None:
    from cxrprep.datasets.benchmarks import hash_split

    root = OUT / "rsna"

    def pid_of(i: int) -> str:
        h = hashlib.md5(f"rsna{i}".encode()).hexdigest()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    def rows(k: int, pid: str, lab: int) -> list[str]:
        _dicom(root / "stage_2_train_images" / f"{pid}.dcm", _img(imgs, k, bool(lab)), view=rng.choice(["PA", "AP"]))
        if not lab:
            return [f"{pid},,,,,0"]
        boxes = [
            (rng.uniform(100, 600), rng.uniform(150, 600), rng.uniform(100, 300), rng.uniform(100, 400))
            for _ in range(rng.choice([1, 2, 2, 3]))
        ]
        return [f"{pid},{x:.1f},{y:.1f},{w:.1f},{h:.1f},1" for x, y, w, h in boxes]  # one row per box

    ids = _quota_ids(pid_of, {"train": 6, "validate": 2, "test": 4}, hash_split)
    _write_rows(root / "stage_2_train_labels.csv", "patientId,x,y,width,height,Target", ids, rows)


def make_siim(imgs, rng: random.Random) -> None:
    from cxrprep.datasets.benchmarks import hash_split

    root = OUT / "siim"
    ids = _quota_ids(
        lambda i: f"1.2.276.0.7230010.3.1.4.8323329.{1000 + i}.1517875{160 + i}.{900000 + 37 * i}",
        {"train": 5, "validate": 2, "test": 4},
        hash_split,
    )

    def rows(k: int, iid: str, lab: int) -> list[str]:
        study, series = _uid("study", iid), _uid("series", iid)
        _dicom(root / "dicom-images-train" / study / series / f"{iid}.dcm", _img(imgs, k + 3, bool(lab)), jpeg=True)
        if not lab:
            return [f"{iid}, -1"]
        out = []
        for _ in range(rng.choice([1, 2])):  # one row per mask component; starts relative to the last run
            runs = [rng.randint(100000, 600000), rng.randint(1, 30)]
            for _ in range(rng.randint(1, 4)):
                runs += [rng.randint(990, 1010), rng.randint(1, 30)]  # (gap, length) pairs, next image row
            out.append(f"{iid}, {' '.join(map(str, runs))}")
        return out

    # the real stage-1 header: a leading space before EncodedPixels
    _write_rows(root / "train-rle.csv", "ImageId, EncodedPixels", ids, rows)


def make_vindr(imgs, rng: random.Random) -> None:
    from cxrprep.datasets.benchmarks import hash_split

    root = OUT / "vindr"
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    head = "image_id,rad_id," + ",".join(VINDR)
    train = _quota_ids(
        lambda i: hashlib.md5(f"vindr-train{i}".encode()).hexdigest(),
        {"train": 4, "validate": 2},
        lambda x: "validate" if hash_split(x, 80, 20) == "validate" else "train",
    )
    test = [(hashlib.md5(f"vindr-test{i}".encode()).hexdigest(), "test", i % 2) for i in range(10)]
    cols = {c: k for k, c in enumerate(VINDR)}
    tr_lines, te_lines = [head], [head]
    for k, (iid, split, lab) in enumerate(train + test):
        is_test = split == "test"
        _dicom(
            root / ("test" if is_test else "train") / f"{iid}.dicom",
            _img(imgs, k + 5, bool(lab)),
            mono1=k % 2 == 0,
            bits=16,
        )
        truth = [0] * len(VINDR)
        if lab:
            for c in ("Cardiomegaly", "Aortic enlargement") if k % 4 == 1 else ("Pleural effusion", "Lung Opacity"):
                truth[cols[c]] = 1
            truth[cols["Pneumonia"]] = int(k % 3 == 0)
        else:
            truth[cols["No finding"]] = 1
        if is_test:  # one consensus row (5 readers) per test image
            te_lines.append(f"{iid},R{rng.randint(8, 10)}," + ",".join(map(str, truth)))
            continue
        for r, rad in enumerate(rng.sample(range(1, 18), 3)):  # three radiologists; the third disagrees
            v = list(truth)
            if r == 2 and lab:
                v = [0] * len(VINDR)
                v[cols["No finding"]] = 1
            tr_lines.append(f"{iid},R{rad}," + ",".join(map(str, v)))
    (ann / "image_labels_train.csv").write_text("\n".join(tr_lines) + "\n")
    (ann / "image_labels_test.csv").write_text("\n".join(te_lines) + "\n")


_OPENI = [  # (findings, impression, mesh major)
    (
        "The cardiac silhouette and mediastinum size are within normal limits. There is no pulmonary edema. "
        "There is no focal consolidation. There are no XXXX of a pleural effusion. There is no evidence of pneumothorax.",  # noqa: E501
        "Normal chest x-XXXX.",
        ["normal"],
    ),
    (
        "Borderline cardiomegaly. Midline sternotomy XXXX. Enlarged pulmonary arteries. Clear lungs. Inferior XXXX XXXX XXXX.",  # noqa: E501
        "No acute pulmonary findings.",
        ["Cardiomegaly/borderline", "Pulmonary Artery/enlarged"],
    ),
    (
        "",
        "No displaced rib fractures, pneumothorax, or pleural effusion identified. Well-expanded and clear lungs.",
        ["normal"],
    ),
    (
        "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
        "No acute disease.",
        ["normal"],
    ),
    (
        "There is a small right pleural effusion. Mild cardiomegaly. No pneumothorax.",
        "Small right pleural effusion with mild cardiomegaly.",
        ["Pleural Effusion/right/small", "Cardiomegaly/mild"],
    ),
    (
        "Patchy opacity in the left lower lobe may represent atelectasis or pneumonia. Heart size normal.",
        "Left basilar opacity, atelectasis versus pneumonia.",
        ["Opacity/lung/base/left/patchy", "Pneumonia"],
    ),
    ("", "", []),  # a report with no findings and no impression text: rejected (skipped)
    (
        "Hyperexpanded lungs with flattened diaphragms, consistent with emphysema. No focal airspace disease.",
        "Emphysema. No acute cardiopulmonary abnormality.",
        ["Pulmonary Emphysema"],
    ),
    (
        "Stable calcified granuloma in the right upper lobe. No pleural effusion or pneumothorax. Normal heart size.",
        "No active disease.",
        ["Calcified Granuloma/lung/upper lobe/right"],
    ),
    (
        "Interval placement of a right-sided XXXX catheter with tip in the SVC. Lungs are clear.",
        "Right-sided catheter in good position.",
        ["Catheters, Indwelling"],
    ),
]


def _xml(n: int, findings: str, impression: str, mesh: list[str], images: list[str]) -> str:
    def at(label, text):
        return (
            f'            <AbstractText Label="{label}">{text}</AbstractText>'
            if text
            else f'            <AbstractText Label="{label}"/>'
        )

    mesh_xml = "".join(f"\n      <major>{m}</major>" for m in mesh) or "\n      <automatic>normal</automatic>"
    imgs = "".join(
        f"""
   <parentImage id="{i}">
      <figureId>F{k + 1}</figureId>
      <caption>Xray Chest PA and Lateral</caption>
      <panel type="single">
         <url>/hadoop/storage/radiology/extract/{i}.jpg</url>
         <imgModality>7</imgModality>
      </panel>
   </parentImage>"""
        for k, i in enumerate(images)
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation>
   <meta type="rr"/>
   <uId id="CXR{n}"/>
   <pmcId id="{n}"/>
   <docSource>CXR</docSource>
   <IUXRId id="{n}"/>
   <licenseType>open-access</licenseType>
   <licenseURL>http://creativecommons.org/licenses/by-nc-nd/4.0/</licenseURL>
   <ccLicense>byncnd</ccLicense>
   <articleDate>2013-08-01</articleDate>
   <articleType>XR</articleType>
   <publisher>Indiana University</publisher>
   <title>Indiana University Chest X-ray Collection</title>
   <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
      <Article PubModel="Electronic">
         <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
         <Abstract>
{at("COMPARISON", "None." if n % 2 else "XXXX, XXXX")}
{at("INDICATION", "XXXX-year-old male, chest pain.")}
{at("FINDINGS", findings)}
{at("IMPRESSION", impression)}
         </Abstract>
         <Language>eng</Language>
      </Article>
   </MedlineCitation>
   <MeSH>{mesh_xml}
   </MeSH>{imgs}
</eCitation>
"""


def make_openi(imgs) -> None:
    root = OUT / "openi"
    (root / "ecgen-radiology").mkdir(parents=True, exist_ok=True)
    for n, (f, i, mesh) in enumerate(_OPENI, start=1):
        ids = [f"CXR{n}_1_IM-{n:04d}-1001", f"CXR{n}_1_IM-{n:04d}-2001"][: 1 + n % 2]
        for k, iid in enumerate(ids):
            if n == 5 and k == 1:
                continue  # listed in the XML but missing on disk: an image-level reject
            p = root / "NLMCXR_png" / f"{iid}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(p), _img(imgs, n + k, "effusion" in (f + i).lower()))
        (root / "ecgen-radiology" / f"{n}.xml").write_text(_xml(n, f, i, mesh, ids))
    (root / "ecgen-radiology" / f"{len(_OPENI) + 1}.xml").write_text(
        '<?xml version="1.0"?>\n<eCitation><uId id="CXR11"/>\n'
    )


def main() -> None:
    imgs = _images()
    make_rsna(imgs, random.Random(1))
    make_siim(imgs, random.Random(2))
    make_vindr(imgs, random.Random(3))
    make_openi(imgs)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
