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
