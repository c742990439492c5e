"""Where each source dataset comes from, under which terms, and how to cite it: the dataset card's licence,
citation and data-use section (README.md of every dataset folder), keyed by the dataset name cxrprep writes.

These are facts about the sources, transcribed from their official pages (linked in ``terms``); cxrkit adds no
terms of its own. ``restricted`` marks data that may only be shared with people who hold the same access:
the card then warns against uploading the folder anywhere, the Hugging Face Hub included.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    title: str  # the source dataset's own name
    licence: str  # the licence or agreement, as the distributor names it
    terms: str  # the official page with the terms
    citation: str  # the paper the distributor asks users to cite
    restricted: bool  # access needs an individual agreement with the distributor: never redistribute


_MIMIC = Source(
    title="MIMIC-CXR / MIMIC-CXR-JPG (PhysioNet)",
    licence="PhysioNet Credentialed Health Data License 1.5.0, with the PhysioNet Credentialed Health Data Use "
    "Agreement 1.5.0 (credentialed access, CITI training)",
    terms="https://physionet.org/content/mimic-cxr/2.0.0/",
    citation="Johnson AEW, Pollard TJ, Berkowitz SJ, et al. MIMIC-CXR, a de-identified publicly available database "
    "of chest radiographs with free-text reports. Scientific Data 6, 317 (2019).",
    restricted=True,
)
_CHEXPERT = Source(
    title="CheXpert (Stanford ML Group)",
    licence="Stanford University School of Medicine CheXpert Dataset Research Use Agreement (personal, "
    "non-commercial research use; no redistribution)",
    terms="https://stanfordmlgroup.github.io/competitions/chexpert/",
    citation="Irvin J, Rajpurkar P, Ko M, et al. CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels "
    "and Expert Comparison. AAAI 2019.",
    restricted=True,
)
_NIH = Source(
    title="NIH ChestX-ray14 (NIH Clinical Center)",
    licence="released by the NIH Clinical Center without restrictions on use; attribution required: link the NIH "
    "download site, cite the CVPR 2017 paper, acknowledge the NIH Clinical Center as the data provider",
    terms="https://nihcc.app.box.com/v/ChestXray-NIHCC",
    citation="Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database "
    "and Benchmarks on Weakly-Supervised Classification and Localization of Common Thorax Diseases. CVPR 2017.",
    restricted=False,
)
SOURCES: dict[str, Source] = {
    "mimic-cxr": _MIMIC,
    "mimic-5x200": _MIMIC,
    "chexpert": _CHEXPERT,
    "chexpert-5x200": _CHEXPERT,
    "chestx-ray14": _NIH,
    "openi": Source(
        title="Indiana University chest X-ray collection (Open-i, National Library of Medicine)",
        licence="the terms of the NLM Open-i service",
        terms="https://openi.nlm.nih.gov/faq",
        citation="Demner-Fushman D, Kohli MD, Rosenman MB, et al. Preparing a collection of radiology examinations "
        "for distribution and retrieval. JAMIA 23(2):304-310 (2016).",
        restricted=False,
    ),
    "rsna-pneumonia": Source(
        title="RSNA Pneumonia Detection Challenge (Kaggle; images from NIH ChestX-ray14)",
        licence="the competition's data rules on Kaggle, and the NIH ChestX-ray14 attribution terms",
        terms="https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/rules",
        citation="Shih G, Wu CC, Halabi SS, et al. Augmenting the National Institutes of Health Chest Radiograph "
        "Dataset with Expert Annotations of Possible Pneumonia. Radiology: Artificial Intelligence 1(1) (2019).",
        restricted=True,
    ),
    "siim-acr-pneumothorax": Source(
        title="SIIM-ACR Pneumothorax Segmentation (Kaggle)",
        licence="the competition's data rules on Kaggle",
        terms="https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation/rules",
        citation="Zawacki A, Wu C, Shih G, et al. SIIM-ACR Pneumothorax Segmentation. Kaggle (2019).",
        restricted=True,
    ),
    "vindr-cxr": Source(
        title="VinDr-CXR (PhysioNet)",
        licence="the PhysioNet licence and data use agreement shown on the project page (signed before download)",
        terms="https://physionet.org/content/vindr-cxr/1.0.0/",
        citation="Nguyen HQ, Lam K, Le LT, et al. VinDr-CXR: An open dataset of chest X-rays with radiologist's "
        "annotations. Scientific Data 9, 429 (2022).",
        restricted=True,
    ),
}

UNKNOWN_NOTE = (
    "cxrkit does not know this dataset's source: add its licence, data-use terms and citation here before "
    "sharing anything built from it."
)


def card_section(dataset: str) -> list[str]:
    """The dataset card's "Source, licence and citation" lines for ``dataset``."""
    src = SOURCES.get(dataset)
    lines = ["## Source, licence and citation", ""]
    if src is None:
        return lines + [UNKNOWN_NOTE, ""]
    lines += [
        f"- Source: {src.title}",
        f"- Licence / data-use terms: {src.licence} (<{src.terms}>)",
        f"- Cite: {src.citation}",
        "- These shards are derived data: the source's terms apply to them unchanged.",
        "",
    ]
    if src.restricted:
        lines += [
            "> **Do not upload this folder** (no `push_to_hub`, no public bucket, no shared drive): it holds images",
            "> and text of a dataset that may only be shared with people who signed the same agreement.",
            "",
        ]
    return lines


def hub_licence(dataset: str) -> tuple[str, str | None]:
    """The card's YAML ``license`` value and ``license_link`` (Hugging Face's field names)."""
    src = SOURCES.get(dataset)
    return ("other", src.terms if src else None)
