"""Synthetic but realistic MIMIC-CXR report files (for the demo data and the 200k-report benchmark).

Formats follow ../shared/FORMATS.md 1.2: a ``FINAL REPORT`` banner after 33 spaces, one leading space on
every following line, blank lines that are a single space, text wrapped at 79 columns, ``HEADER:`` plus two
spaces before inline text, ``FINDINGS:`` / ``IMPRESSION:`` standing alone with a trailing space, ``___`` for
de-identified values, addenda at the top separated by a line of underscores. Variety: header variants and
misspellings, numbered impressions, a final sentence without a period, reports with neither findings nor
impression (the parser's fallback), wet reads.

    python examples/synth_reports.py OUT_ROOT -n 200000     # writes OUT_ROOT/files/pNN/pNNNNNNNN/sNNNNNNNN.txt
"""

from __future__ import annotations

import argparse
import random
import textwrap
from pathlib import Path

EXAMS = ["CHEST (PA AND LAT)", "CHEST (PORTABLE AP)", "CHEST PA AND LATERAL", "CHEST (SINGLE VIEW)"]
INDICATIONS = [
    "___ year old woman with ?pleural effusion  // ?pleural effusion",
    "___ year old man with shortness of breath  // eval for pneumonia",
    "___F with fever and cough, r/o pna",
    "History: ___M with chest pain",
    "___ year old man s/p CABG  // eval for pneumothorax",
    "Evaluate endotracheal tube position.",
]
FINDINGS = [
    "The lungs are clear without focal consolidation.",
    "There is no pleural effusion or pneumothorax.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Heart size is normal.",
    "The heart is mildly enlarged.",
    "Moderate cardiomegaly is unchanged.",
    "Small left pleural effusion is new.",
    "Large right pleural effusion has increased since ___.",
    "Mild pulmonary vascular congestion is present.",
    "There is mild interstitial pulmonary edema.",
    "Right lower lobe opacity may reflect atelectasis or pneumonia.",
    "Bibasilar atelectasis is seen.",
    "A 2.5 cm nodular opacity projects over the left upper lobe.",
    "Endotracheal tube terminates approx. 4.5 cm above the carina.",
    "A right PICC line ends in the mid SVC.",
    "Median sternotomy wires are intact.",
    "No acute osseous abnormality is identified.",
    "There are mild degenerative changes in the thoracic spine.",
    "Hilar contours are normal.",
    "There is no focal consolidation, effusion, or pneumothorax.",
    "Compared to the prior study from ___, there is little change.",
    "Pt. is rotated to the right.",
]
IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "Small left pleural effusion.",
    "Mild pulmonary edema.",
    "Right lower lobe pneumonia.",
    "Stable cardiomegaly without edema.",
    "No pneumothorax.",
    "Findings suggestive of early pneumonia in the appropriate clinical setting.",
    "Interval improvement in bibasilar atelectasis.",
    "Lines and tubes in standard position.",
]
HEADER_VARIANTS = {
    "FINDINGS": ["FINDINGS", "FINDINGS", "FINDINGS", "FINDINGS", "FINDINGS", "FINDINGS", "FINDNGS", "Findings"],
    "IMPRESSION": [
        "IMPRESSION",
        "IMPRESSION",
        "IMPRESSION",
        "IMPRESSION",
        "IMPRESSION",
        "CONCLUSION",
        "IMPRESSON",
        "impression",
    ],
    "INDICATION": ["INDICATION", "INDICATION", "INDICATION", "REASON FOR EXAMINATION", "CLINICAL HISTORY", "HISTORY"],
    "COMPARISON": ["COMPARISON", "COMPARISON", "COMPARISONS", "COMPARISON EXAM"],
}


def _wrap(text: str) -> list[str]:
    # one leading space on every line, wrapped so no line exceeds 79 characters
    return [" " + ln for ln in textwrap.wrap(text, width=78, break_long_words=False)] or [" "]


def _inline(header: str, text: str) -> list[str]:
    lines = textwrap.wrap(f"{header}:  {text}", width=78, break_long_words=False)
    return [" " + ln for ln in lines]


def make_report(rng: random.Random) -> str:
    """One report file's text, in the MIMIC-CXR layout."""
    out = [" " * 33 + "FINAL REPORT"]
    if rng.random() < 0.03:  # addendum at the top, then a line of underscores
        out = [
            " " * 33 + "FINAL REPORT",
            " ADDENDUM:  ",
            " ",
            *_wrap(
                f"Findings were discussed with Dr. ___ at {rng.randint(1, 12)}:{rng.randint(10, 59)} "
                f"{rng.choice(['a.m.', 'p.m.'])} on ___."
            ),
            " ",
            " " + "_" * 78,
            " ",
            " " * 33 + "FINAL REPORT",
        ]
    if rng.random() < 0.8:
        out += _inline("EXAMINATION", rng.choice(EXAMS)) + [" "]
    out += _inline(rng.choice(HEADER_VARIANTS["INDICATION"]), rng.choice(INDICATIONS)) + [" "]
    if rng.random() < 0.6:
        out += _inline("TECHNIQUE", rng.choice(["Chest PA and lateral", "Portable AP chest radiograph"])) + [" "]
    out += _inline(rng.choice(HEADER_VARIANTS["COMPARISON"]), rng.choice(["___", "None.", "Chest radiograph ___."]))
    out += [" "]
    kind = rng.random()
    if kind < 0.04:  # neither findings nor impression: the parser falls back to the last paragraph
        out += _wrap(" ".join(rng.sample(FINDINGS, 3))) + [" "]
        out += _wrap(rng.choice(IMPRESSIONS))
        return "\n".join(out) + "\n"
    has_findings = kind < 0.85
    if has_findings:
        out += [f" {rng.choice(HEADER_VARIANTS['FINDINGS'])}: ", " "]
        sents = rng.sample(FINDINGS, rng.randint(3, 7))
        if rng.random() < 0.3:
            sents[-1] = sents[-1].rstrip(".")  # a final sentence with no period, as in real reports
        text = "  ".join(sents)
        if rng.random() < 0.3:  # two paragraphs
            k = len(sents) // 2
            out += _wrap("  ".join(sents[:k])) + [" "] + _wrap("  ".join(sents[k:]))
        else:
            out += _wrap(text)
        out += [" "]
    out += [f" {rng.choice(HEADER_VARIANTS['IMPRESSION'])}: ", " "]
    imps = rng.sample(IMPRESSIONS, rng.randint(1, 3))
    if len(imps) > 1 and rng.random() < 0.5:  # numbered impression
        for i, s in enumerate(imps, 1):
            out += _wrap(f"{i}. {s}")
    else:
        out += _wrap("  ".join(imps))
    if rng.random() < 0.1:
        out += [
            " ",
            *_inline(
                "NOTIFICATION",
                f"The findings were discussed with Dr. ___ by telephone at "
                f"{rng.randint(1, 12)}:{rng.randint(10, 59)} p.m. on ___.",
            ),
        ]
    return "\n".join(out) + "\n"


def report_path(root: Path, subject: int, study: int) -> Path:
    s = f"{subject:08d}"
    return root / "files" / f"p{s[:2]}" / f"p{s}" / f"s{study:08d}.txt"


def write_corpus(root: Path, n: int, seed: int = 0, make=None) -> int:
    """Write ``n`` reports under ``root/files/`` (about 2.5 studies per patient); returns n.

    ``make(rng) -> str`` composes one report (default: this module's ``make_report``)."""
    make = make or make_report
    rng = random.Random(seed)
    subject, study, k = 10000000, 50000000, 0
    while k < n:
        subject += rng.randint(1, 50)
        for _ in range(rng.randint(1, 4)):
            if k >= n:
                break
            study += rng.randint(1, 40)
            p = report_path(root, subject, study)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(make(rng))
            k += 1
    return n


def corpus_parser(doc: str) -> argparse.ArgumentParser:
    """The command line of a report corpus generator (this one, bench/realistic_reports.py): ROOT, -n, --seed."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main() -> None:
    a = corpus_parser(__doc__).parse_args()
    write_corpus(a.root, a.n, a.seed)
    print(f"wrote {a.n} reports under {a.root / 'files'}")


if __name__ == "__main__":
    main()
