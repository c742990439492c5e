"""Open-I / IU X-ray (NLMCXR) reports and images -> report shards (``cxrprep openi``).

Input: the ``ecgen-radiology/`` folder of XML reports (one ``{N}.xml`` per study: ``<uId id="CXR{N}"/>``,
``<AbstractText Label="COMPARISON|INDICATION|FINDINGS|IMPRESSION">``, empty elements when a section is
missing, ``<MeSH><major>..</major><automatic>..</automatic></MeSH>``, 0-5 ``<parentImage id="CXR{N}_{k}_IM-..">``
with a ``<caption>``; de-identified text is ``XXXX``, kept as is) and the images, PNG (``NLMCXR_png``:
``CXR{N}_{k}_IM-....png``) or DICOM (``NLMCXR_dcm``: ``{N}_{k}_IM-....dcm``), found under ``--image-root``
by the parentImage id.

Rows: one study per XML; ``findings``/``impression`` (whitespace-normalised) + their sentences; COMPARISON,
INDICATION and the MeSH terms (``mesh_major``, ``mesh_automatic``, ``; ``-joined) in ``sections``. Rejects:
unreadable XML (failed), no FINDINGS and no IMPRESSION text (skipped), no readable image (failed/skipped).

Split (Open-I has no patient ids; each XML is one study): ``--split test`` (default; CXR-CLIP uses all of
Open-I as an external test set) puts every study in test; ``--split hash`` assigns sha256(uId) mod 100 ->
70/15/15 train/validate/test, deterministic and independent of file order or --part.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from cxrprep.datasets.benchmarks import BenchConfig, hash_split, write_items
from cxrprep.image.process import ImageSettings

DATASET = "openi"
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class OpenIConfig:
    image_root: str | None = None
    split: str = "test"  # test | hash
    images: bool = True
    workers: int = 1
    part: tuple[int, int] | None = None
    image_settings: ImageSettings = field(default_factory=ImageSettings)
    overwrite: bool = False  # --overwrite: replace a finished dataset of the same name (never recorded)

    def __post_init__(self) -> None:
        if self.split not in ("test", "hash"):
            raise ValueError(f"--split must be test or hash, got {self.split!r}")


def _norm(text: str | None) -> str | None:
    t = _WS.sub(" ", text or "").strip()
    return t or None


def parse_report(path: Path) -> dict:
    """One NLMCXR XML -> {uid, sections{LABEL: text|None}, mesh_major, mesh_automatic, images[(id, caption)]}.
    Raises ValueError naming the file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not well-formed XML ({e})") from None
    uid_el = root.find("uId")
    uid = uid_el.get("id") if uid_el is not None else None
    if not uid:
        raise ValueError(f"{path}: no <uId id=...> element")
    sections = {}
    for el in root.iter("AbstractText"):
        label = (el.get("Label") or "").strip().upper()
        if label:
            sections[label] = _norm("".join(el.itertext()))
    mesh = root.find("MeSH")
    major = [_norm(e.text) for e in mesh.findall("major")] if mesh is not None else []
    auto = [_norm(e.text) for e in mesh.findall("automatic")] if mesh is not None else []
    images = []
    for pi in root.findall("parentImage"):
        cap = pi.find("caption")
        images.append((pi.get("id"), _norm(cap.text if cap is not None else None)))
    return dict(
        uid=uid,
        sections=sections,
        mesh_major=[m for m in major if m],
        mesh_automatic=[m for m in auto if m],
        images=[i for i in images if i[0]],
    )


def _image_index(root: Path) -> dict[str, Path]:
    """image name without suffix(es) -> file, for PNG (CXR1_1_IM-0001-3001.png), DICOM (1_IM-0001-3001.dcm)
    and Kaggle's (1_IM-0001-3001.dcm.png) names."""
    out: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in (".png", ".dcm", ".dicom", ".jpg", ".jpeg"):
            stem = p.name.split(".")[0]
            out.setdefault(stem, p)
            out.setdefault(stem[3:] if stem.startswith("CXR") else "CXR" + stem, p)
    return out


def read_openi(xml_dir: Path, image_root: Path | None, split_mode: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """-> (items, rejects [(source, reason, kind)]) in file-name order (numeric)."""
    from cxrprep.text.sentences import split_sections

    files = sorted(xml_dir.glob("*.xml"), key=lambda p: (len(p.stem), p.stem))
    if not files:
        raise ValueError(f"{xml_dir}: no *.xml reports here; give the ecgen-radiology/ folder")
    index = _image_index(image_root) if image_root else {}
    items, rejects = [], []
    for f in files:
        try:
            r = parse_report(f)
        except ValueError as e:
            rejects.append((f.name, None, "read", "failed", str(e)))
            continue
        fnd, imp = r["sections"].get("FINDINGS"), r["sections"].get("IMPRESSION")
        if not fnd and not imp:
            rejects.append(
                (f.name, r["uid"], "sections", "skipped", f"{f.name}: FINDINGS and IMPRESSION are both empty")
            )
            continue
        fs, is_ = split_sections([fnd, imp])
        secs = [
            dict(name=k.lower(), text=v)
            for k, v in sorted(r["sections"].items())
            if k not in ("FINDINGS", "IMPRESSION") and v
        ]
        for k in ("mesh_major", "mesh_automatic"):
            if r[k]:
                secs.append(dict(name=k, text="; ".join(r[k])))
        paths = [index.get(i, (image_root or xml_dir) / f"{i}.png") for i, _ in r["images"]]
        items.append(
            dict(
                study_id=r["uid"],
                subject_id=r["uid"],
                source=f.name,
                split="test" if split_mode == "test" else hash_split(r["uid"]),
                labels=[],
                findings=fnd,
                impression=imp,
                findings_sentences=fs,
                impression_sentences=is_,
                sections=secs,
                paths=paths,
            )
        )
    return items, rejects


def run_openi(xml_dir: Path, out: Path, cfg: OpenIConfig, progress=lambda it, total: it) -> dict:
    root = Path(cfg.image_root) if cfg.image_root else None
    if cfg.images and root is None:
        raise ValueError(
            "--image-root is required with --images (the NLMCXR_png or NLMCXR_dcm folder); "
            "use --no-images for text only"
        )
    items, rejects = read_openi(Path(xml_dir), root, cfg.split)
    bcfg = BenchConfig(image_root=cfg.image_root, workers=cfg.workers, part=cfg.part, images=cfg.image_settings)
    return write_items(
        items,
        [],
        out,
        DATASET,
        bcfg,
        "openi",
        dict(xml_dir=str(xml_dir), split_rule=cfg.split),
        progress=progress,
        pre_rejects=rejects,
        with_images=cfg.images,
    )
