"""The dataset card names each source's licence, data-use terms and citation, and warns against uploading
data whose terms forbid redistribution."""

from __future__ import annotations

import yaml

from cxrprep.shards.card import card_text
from cxrprep.shards.sources import SOURCES


def _manifest(name: str) -> dict:
    counts = dict(inputs_seen=3, rows_written=2, skipped=1, failed=0, images_written=2, images_failed=0)
    return dict(dataset=name, splits={"train": 2}, counts=counts, rejects={"file": "rejects.jsonl", "rows": 1})


def _header(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


def test_restricted_source_card_has_terms_citation_and_warning():
    card = card_text(_manifest("mimic-cxr"), b"{}")
    head = _header(card)
    assert head["license"] == "other" and head["license_link"] == "https://physionet.org/content/mimic-cxr/2.0.0/"
    assert "PhysioNet Credentialed Health Data License 1.5.0" in card
    assert "Johnson AEW" in card and "Scientific Data 6, 317 (2019)" in card
    assert "**Do not upload this folder** (no `push_to_hub`" in card


def test_open_source_card_has_attribution_but_no_upload_warning():
    card = card_text(_manifest("chestx-ray14"), b"{}")
    assert "ChestX-ray8: Hospital-scale" in card and "NIH Clinical Center" in card
    assert "Do not upload" not in card


def test_unknown_dataset_card_says_terms_are_unknown():
    card = card_text(_manifest("my-hospital"), b"{}")
    assert "license_link" not in card and _header(card)["license"] == "other"
    assert "does not know this dataset's source" in card


def test_every_dataset_cxrprep_writes_has_a_source():
    written = ["mimic-cxr", "mimic-5x200", "chexpert", "chexpert-5x200", "chestx-ray14", "openi",
               "rsna-pneumonia", "siim-acr-pneumothorax", "vindr-cxr"]  # fmt: skip
    assert set(written) <= set(SOURCES)
    assert all(s.terms.startswith("https://") and s.citation for s in SOURCES.values())
