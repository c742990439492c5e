"""Label names of the supported datasets, in the order shards store them, and cross-dataset aliases.

CheXpert (and MIMIC-CXR's mimic-cxr-2.0.0-chexpert.csv) use the 14 CheXpert observations; shards keep
them in this (alphabetical, MIMIC) order whatever the order of the input CSV's columns. ChestX-ray14 uses
14 findings plus "No Finding" with its own spellings (``Pleural_Thickening``, ``Effusion``)."""

from __future__ import annotations

CHEXPERT_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)

#: The first five columns of CheXpert-v1.0's train.csv/valid.csv, before the 14 observations.
CHEXPERT_CSV_META: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")

#: The 14 observations in the column order of CheXpert-v1.0's train.csv/valid.csv (shared/FORMATS.md 2.1; the
#: header of Stanford's CheXpert-v1.0-small/train.csv). Shards use CHEXPERT_LABELS' order instead.
CHEXPERT_CSV_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: ChestX-ray14 'Finding Labels' strings exactly as in Data_Entry_2017*.csv.
NIH_LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "No Finding",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)

#: CheXpert competition tasks (CheXpert 5x200 classes).
COMPETITION_TASKS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

#: Dataset spellings -> canonical class names used by the templates.
ALIASES: dict[str, str] = {
    "Effusion": "Pleural Effusion",
    "Pleural_Thickening": "Pleural Thickening",
    "Infiltrate": "Infiltration",
    "Airspace Opacity": "Lung Opacity",
}


def canonical(name: str) -> str:
    """The canonical class name of a dataset's label spelling."""
    return ALIASES.get(name, name)


#: classes a "No Finding" study may still carry: CheXpert's labeler sets No Finding when no pathology is
#: positive or uncertain, Support Devices excepted (devices are not a pathology)
NO_FINDING_COMPATIBLE = frozenset({"No Finding", "Support Devices"})


def no_finding_conflict(states: list[tuple[str, str]]) -> bool:
    """Whether a study's sentence states [(class, positive|negative|uncertain)] say both "No Finding" and a
    finding (a positive or uncertain class other than Support Devices), e.g. No Finding=1 with Edema=1."""
    return any(c == "No Finding" and s == "positive" for c, s in states) and any(
        s in ("positive", "uncertain") and c not in NO_FINDING_COMPATIBLE for c, s in states
    )


def resolve_no_finding(states: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The conflict rule of ``cxrprep prompts``: a finding outranks "No Finding", so a conflicting study's
    No Finding sentence is dropped (its stored labels are kept as they are, and it counts in
    ``label_conflicts``)."""
    if not no_finding_conflict(states):
        return states
    return [(c, s) for c, s in states if c != "No Finding"]
