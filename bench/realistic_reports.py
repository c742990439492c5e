"""Seeded MIMIC-layout report corpus whose text statistics resemble real reports (``--corpus realistic``).

``examples/synth_reports.py`` draws every sentence from 40 fixed ones, so 99% of a 200k corpus repeats
itself and any per-process cache of text looks free. Here sentences are composed from parts (finding,
side, zone, degree, change, comparison, devices with measured distances, clock times, dates), so nearly
every sentence of a report is new to the parser, while a realistic share of stock phrases ("No
pneumothorax.") still repeats.

Layout as in FORMATS.md 1.2 (33-space ``FINAL REPORT`` banner, one leading space per line, single-space
blank lines, wrapping at 79 columns, ``HEADER:`` + two spaces, FINDINGS / IMPRESSION standing alone).
Section presence follows the header counts over 227,885 MIMIC-CXR reports quoted in FORMATS.md (from the
official ``section_parser.normalize_section_names``): impression 82%, comparison 68%, indication 67%,
findings 66%, examination 41%, technique 36%, history 20%, notification ~2.5%. Also: addenda at the top
behind a line of underscores, wet-read fragments, numbered impressions, list items, final sentences
without a period, typo headers and reports with neither findings nor impression.

    python bench/realistic_reports.py OUT_ROOT -n 40000 [--seed 0] [--stats]
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from synth_reports import _inline, _wrap, corpus_parser  # noqa: E402
from synth_reports import write_corpus as _write_corpus  # noqa: E402

SIDES = ["right", "left", "bilateral", "right-sided", "left-sided", "bibasilar"]
ZONES = [
    "lung base",
    "lower lobe",
    "upper lobe",
    "middle lobe",
    "lingula",
    "perihilar region",
    "costophrenic angle",
    "apex",
    "mid lung",
    "infrahilar region",
    "retrocardiac region",
    "hemithorax",
    "suprahilar region",
    "lateral lung",
]
DEGREES = ["small", "moderate", "large", "mild", "minimal", "trace", "moderate to large", "small to moderate"]
FINDINGS = [
    "pleural effusion",
    "atelectasis",
    "consolidation",
    "opacity",
    "airspace opacity",
    "pulmonary edema",
    "interstitial edema",
    "scarring",
    "nodular opacity",
    "pneumothorax",
    "ground-glass opacity",
    "reticular opacity",
    "patchy opacity",
    "subsegmental atelectasis",
    "plate-like atelectasis",
    "pleural thickening",
    "linear opacity",
    "hydropneumothorax",
    "loculated effusion",
    "vascular congestion",
]
CHANGES = [
    "is unchanged",
    "is new",
    "has increased",
    "has decreased",
    "is slightly improved",
    "is slightly worse",
    "is stable",
    "has resolved",
    "has nearly resolved",
    "is more conspicuous",
    "is less conspicuous",
    "persists",
]
SINCE = [
    "since ___",
    "compared to the prior study",
    "from the radiograph of ___",
    "since the examination of ___ at {t}",
    "compared with ___ at {t}",
    "over the interval",
    "from the prior CT of ___",
    "",
]
CAUSES = [
    "atelectasis",
    "pneumonia",
    "aspiration",
    "edema",
    "infection",
    "scarring",
    "a mass",
    "hemorrhage",
    "chronic lung disease",
    "early pneumonia",
]
DEVICES = [
    ("endotracheal tube", ["terminates {d} cm above the carina", "tip lies {d} cm from the carina"]),
    ("right internal jugular line", ["ends in the {v}", "terminates at the {v}"]),
    ("left internal jugular line", ["ends in the {v}", "terminates at the {v}"]),
    ("right PICC line", ["ends in the {v}", "terminates in the {v}"]),
    ("left PICC line", ["ends in the {v}", "tip is in the {v}"]),
    ("nasogastric tube", ["courses below the diaphragm, out of view", "tip is in the stomach", "ends in the {g}"]),
    ("feeding tube", ["ends in the {g}", "terminates in the {g}"]),
    ("Swan-Ganz catheter", ["ends in the {p}", "tip is in the {p}"]),
    ("right chest tube", ["is in place", "tip projects over the apex"]),
    ("left chest tube", ["is in place", "tip projects over the {z}"]),
    ("pacemaker", ["leads end in the {c}", "leads are in standard position in the {c}"]),
]
VEINS = ["mid SVC", "low SVC", "cavoatrial junction", "right atrium", "brachiocephalic vein", "upper SVC"]
GUT = ["stomach", "proximal stomach", "gastric fundus", "distal esophagus", "duodenum"]
PA = ["right pulmonary artery", "left pulmonary artery", "main pulmonary artery", "right interlobar artery"]
CHAMBERS = ["right atrium and right ventricle", "right ventricle", "right atrium"]
STOCK_HEAD = [  # the most frequent stock phrases (bench/bench_translate.py's COMMON starts with them too)
    "No pneumothorax.",
    "No acute cardiopulmonary process.",
    "The lungs are clear.",
    "Heart size is normal.",
    "There is no pleural effusion or pneumothorax.",
    "The cardiomediastinal silhouette is within normal limits.",
]
STOCK = [  # stock phrases that recur in real reports (about one sentence in 16 here)
    *STOCK_HEAD,
    "No acute osseous abnormality is identified.",
    "Hilar contours are normal.",
    "There is no focal consolidation.",
    "Median sternotomy wires are intact.",
]
HEART = [
    "Heart size",
    "The cardiac silhouette",
    "Cardiomegaly",
    "The cardiomediastinal silhouette",
    "Mediastinal widening",
]
HEART_STATE = ["is normal", "is top normal", "is mildly enlarged", "is moderately enlarged", "is markedly enlarged"]
BONES = ["rib", "clavicle", "humerus", "vertebral body", "scapula"]
EXAMS = [
    "CHEST (PA AND LAT)",
    "CHEST (PORTABLE AP)",
    "CHEST PA AND LATERAL",
    "CHEST (SINGLE VIEW)",
    "CHEST (PRE-OP PA AND LAT)",
    "CHEST PORT. LINE PLACEMENT",
]
REASONS = [
    "eval for pneumonia",
    "r/o pna",
    "?pleural effusion",
    "eval for interval change",
    "eval for pneumothorax",
    "ETT placement",
    "line placement",
    "shortness of breath",
    "fever",
    "hypoxia",
    "chest pain",
    "s/p fall",
    "CHF exacerbation",
    "cough",
]
WHO = ["year old woman", "year old man", "F", "M", "yo female", "yo male"]
HISTORY = [
    "CHF",
    "COPD",
    "lung cancer",
    "CABG",
    "ESRD on HD",
    "sepsis",
    "cirrhosis",
    "afib",
    "pneumonia",
    "trauma",
    "stroke",
    "intubation",
    "PE",
    "DVT",
    "MVR",
    "lymphoma",
]
TYPO = {"FINDINGS": ["FINDINGS"] * 30 + ["FINDNGS", "Findings"], "IMPRESSION": ["IMPRESSION"] * 30 + ["IMPRESSON"]}


def _time(rng: random.Random) -> str:
    return f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d} {rng.choice(['a.m.', 'p.m.', 'AM', 'PM'])}"


def _cm(rng: random.Random) -> str:
    return f"{rng.randint(1, 9)}.{rng.randint(0, 9)}"


def _finding(rng: random.Random) -> str:
    f = rng.choice(FINDINGS)
    zone = f"{rng.choice(SIDES)} {rng.choice(ZONES)}"
    since = rng.choice(SINCE).format(t=_time(rng))
    forms = [
        f"{rng.choice(DEGREES)} {f} in the {zone} {rng.choice(CHANGES)} {since}",
        f"there is {rng.choice(DEGREES)} {f} at the {zone}, which {rng.choice(CHANGES)}",
        f"{rng.choice(DEGREES)} {zone} {f} may reflect {rng.choice(CAUSES)} or {rng.choice(CAUSES)}",
        f"a {_cm(rng)} cm {f} projects over the {zone} {since}",
        f"no new {f} is seen; the {zone} {rng.choice(FINDINGS)} {rng.choice(CHANGES)}",
        f"{rng.choice(DEGREES)} {f} {rng.choice(CHANGES)} {since}, likely {rng.choice(CAUSES)}",
    ]
    s = rng.choice(forms).strip()
    return " ".join(s.split())


def _device(rng: random.Random) -> str:
    name, tails = rng.choice(DEVICES)
    tail = rng.choice(tails).format(
        d=_cm(rng),
        v=rng.choice(VEINS),
        g=rng.choice(GUT),
        p=rng.choice(PA),
        c=rng.choice(CHAMBERS),
        z=rng.choice(ZONES),
    )
    s = rng.choice([f"the {name} {tail}", f"a {name} {tail}", f"interval placement of a {name}, which {tail}"])
    if rng.random() < 0.7:
        s += rng.choice(
            [
                f", unchanged {rng.choice(SINCE[:-1])}",
                f", {_cm(rng)} cm from its prior position",
                f" as of {_time(rng)}",
            ]
        )
    return s.format(t=_time(rng))


def _other(rng: random.Random) -> str:
    return rng.choice(
        [
            f"{rng.choice(HEART)} {rng.choice(HEART_STATE)} {rng.choice(SINCE).format(t=_time(rng))}",
            f"healed fracture of the {rng.choice(['right', 'left'])} {rng.randint(3, 11)}th {rng.choice(BONES)}",
            f"{rng.choice(['mild', 'moderate', 'severe'])} degenerative changes of the thoracic spine, "
            f"with loss of height at T{rng.randint(4, 12)}",
            f"the patient is rotated to the {rng.choice(['right', 'left'])}, "
            f"limiting assessment of the {rng.choice(ZONES)}",
            f"pt. was imaged at {_time(rng)} in the {rng.choice(['supine', 'upright', 'semi-upright'])} position",
            f"the aorta is {rng.choice(['tortuous', 'calcified', 'unfolded'])}, approx. {_cm(rng)} cm at the arch",
        ]
    )


def _sentence(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.06:
        return rng.choice(STOCK)
    s = _finding(rng) if r < 0.62 else _device(rng) if r < 0.82 else _other(rng)
    return s[0].upper() + s[1:] + "."


def _findings(rng: random.Random, out: list[str]) -> None:
    out += [f" {rng.choice(TYPO['FINDINGS'])}: ", " "]
    sents = [_sentence(rng) for _ in range(max(1, int(rng.gauss(5.5, 2.0))))]
    if rng.random() < 0.15:
        sents[-1] = sents[-1].rstrip(".")
    if len(sents) > 3 and rng.random() < 0.35:
        k = rng.randint(1, len(sents) - 1)
        out += _wrap("  ".join(sents[:k])) + [" "] + _wrap("  ".join(sents[k:]))
    else:
        out += _wrap("  ".join(sents))
    out.append(" ")


def _impression(rng: random.Random, out: list[str]) -> None:
    out += [f" {rng.choice(TYPO['IMPRESSION'])}: ", " "]
    k = max(1, min(6, int(rng.expovariate(1 / 1.6)) + 1))
    imps = [_sentence(rng) for _ in range(k)]
    if k > 1 and rng.random() < 0.45:  # numbered, one item per line (items can wrap)
        for i, s in enumerate(imps, 1):
            out += _wrap(f"{i}. {s}")
    else:
        out += _wrap("  ".join(imps))
    out.append(" ")


def _preface(rng: random.Random) -> list[str]:
    """Wet-read fragment or addendum above the final report (behind a line of underscores), or none."""
    r = rng.random()
    banner = " " * 33 + "FINAL REPORT"
    if r < 0.06:  # wet read: a short preliminary read, then the final report
        body = _wrap(f"WET READ: ___ ___ {_time(rng)}") + _wrap(f"{_sentence(rng)}  {_sentence(rng)}")
        return body + [" " + "_" * 78, " ", banner]
    if r < 0.10:
        body = [" ADDENDUM:  ", " "] + _wrap(
            f"{_sentence(rng)}  Findings were discussed with Dr. ___ at {_time(rng)} on ___."
        )
        return [banner] + body + [" ", " " + "_" * 78, " ", banner]
    return [banner]


def make_report(rng: random.Random) -> str:
    out = _preface(rng)
    if rng.random() < 0.41:
        out += _inline("EXAMINATION", rng.choice(EXAMS)) + [" "]
    if rng.random() < 0.67:
        who = f"___ {rng.choice(WHO)} with {rng.choice(HISTORY)} and {rng.choice(REASONS)}"
        out += _inline(
            rng.choice(["INDICATION", "INDICATION", "REASON FOR EXAMINATION"]), f"{who}  // {rng.choice(REASONS)}"
        )
        out.append(" ")
    if rng.random() < 0.20:
        out += _inline("HISTORY", f"{rng.choice(HISTORY)}, {rng.choice(REASONS)}.") + [" "]
    if rng.random() < 0.36:
        out += _inline("TECHNIQUE", rng.choice(["Chest PA and lateral", "Portable AP chest radiograph", "AP upright"]))
        out.append(" ")
    if rng.random() < 0.68:
        out += _inline(
            rng.choice(["COMPARISON", "COMPARISON", "COMPARISONS"]),
            rng.choice(["___", "None.", f"___ at {_time(rng)}."]),
        )
        out.append(" ")
    kind = rng.random()
    if kind < 0.07:  # neither header: text straight after the preamble (the parsers' fallback)
        out += _wrap("  ".join(_sentence(rng) for _ in range(rng.randint(2, 6)))) + [" "]
        out += _wrap(_sentence(rng))
        return "\n".join(out) + "\n"
    if kind < 0.73:
        _findings(rng, out)
    if kind < 0.16 or kind >= 0.33:  # ~82% with an impression
        _impression(rng, out)
    if rng.random() < 0.025:
        out += _inline("NOTIFICATION", f"Dr. ___ was paged at {_time(rng)} on ___ with these findings.") + [" "]
    return "\n".join(out).rstrip(" \n") + "\n"


def write_corpus(root: Path, n: int, seed: int = 0) -> int:
    """Write ``n`` realistic reports under ``root/files/`` (the layout and patient draw of synth_reports)."""
    return _write_corpus(root, n, seed, make=make_report)


def corpus_stats(files: Path) -> dict:
    """Text statistics of a corpus, measured with cxrkit's own parser and sentence splitter."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from cxrprep.text.sections import parse_report
    from cxrprep.text.sentences import split_sections

    n = sents = 0
    distinct: set[str] = set()
    per_sec = {"findings": [0, 0], "impression": [0, 0]}
    for p in sorted(files.rglob("s*.txt")):
        rep = parse_report(p.read_text())
        n += 1
        fs, ims = split_sections([rep.findings, rep.impression])
        for name, ss in (("findings", fs), ("impression", ims)):
            if ss:
                per_sec[name][0] += 1
                per_sec[name][1] += len(ss)
            sents += len(ss)
            distinct.update(ss)
    out = {"reports": n, "sentences": sents, "distinct_sentences": len(distinct)}
    out["distinct_share"] = round(len(distinct) / max(sents, 1), 3)
    for name, (k, s) in per_sec.items():
        out[f"{name}_present"] = round(k / max(n, 1), 3)
        out[f"{name}_mean_sentences"] = round(s / max(k, 1), 2)
    return out


def main() -> None:
    ap = corpus_parser(__doc__)
    ap.add_argument("--stats", action="store_true", help="print the corpus statistics after writing it")
    a = ap.parse_args()
    write_corpus(a.root, a.n, a.seed)
    print(f"wrote {a.n} reports under {a.root / 'files'}")
    if a.stats:
        print(corpus_stats(a.root / "files"))


if __name__ == "__main__":
    main()
