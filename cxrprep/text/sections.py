"""Radiology report text -> named sections (findings, impression, and every other header).

Reference behaviour: the official MIMIC-CXR section parser (MIT-LCP/mimic-cxr, txt/section_parser.py).
On ordinary MIMIC reports (upper-case ``HEADER:`` after a newline and one space) this module returns the
same findings and impression, including its rules that the *last* non-empty findings / impression section
wins and that a report with neither falls back to its last paragraph. Where it differs, on purpose:

* a header on the very first line, lines without the leading space, and lower-case or Title-case headers
  (``findings:``, as in NegBio / other hospitals' reports) are recognised; to avoid false positives a
  non-upper-case header is only accepted when its name is a known header (table below);
* header name typos not in the table are matched to ``findings``/``impression`` by edit similarity
  (difflib ratio >= 0.85), so ``FINDNIGS`` is not lost;
* addenda, which MIMIC places at the top separated by a line of underscores, become an ``addendum``
  section instead of being glued onto whatever header precedes them;
* the ``FINAL REPORT`` banner is dropped from the preamble;
* the fallback paragraph is the last non-empty paragraph of the report body (the official parser takes
  everything after the first paragraph of the last section, which can span several paragraphs).

``parse_report`` returns a :class:`Report` whose texts keep line structure (the sentence splitter uses
line breaks); ``normalize_ws`` gives the single-line form stored in shards.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

#: header (lower case, inner whitespace collapsed) -> normalised section name. Variants and misspellings
#: are those that occur in MIMIC-CXR reports (counts are in ../shared/FORMATS.md and the official parser).
HEADER_NAMES: dict[str, str] = {
    "preamble": "preamble",
    "impression": "impression",
    "impressions": "impression",
    "comparison": "comparison",
    "comparisons": "comparison",
    "indication": "indication",
    "indications": "indication",
    "findings": "findings",
    "finding": "findings",
    "examination": "examination",
    "exam": "examination",
    "type of examination": "examination",
    "technique": "technique",
    "history": "history",
    "clinical history": "history",
    "patient history": "history",
    "clinical information": "history",
    "pfi": "history",
    "reason for examination": "indication",
    "reason for exam": "indication",
    "clinical indication": "indication",
    "notification": "notification",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings / impression": "impression",
    "impression and findings": "impression",
    "chest, two views": "findings",
    "recommendation": "recommendations",
    "recommendations": "recommendations",
    "recommendation(s)": "recommendations",
    "reference exam": "comparison",
    "comparison exam": "comparison",
    "comparison film": "comparison",
    "comparision": "comparison",
    "addendum": "addendum",
    "date": "date",
    "comment": "comment",
    "comments": "comment",
    "wet read": "wet read",
    "wetread": "wet read",
    "final report": "preamble",
    "procedure": "examination",
    "study": "examination",
    # misspellings seen in MIMIC-CXR
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "findings/ impression": "impression",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "reference findings": "findings",
    "idication": "indication",
    "ndication": "indication",
}

# A header: optional spaces, a name of letters and a few punctuation marks, a colon, then spaces or EOL.
_HEADER = re.compile(r"^[ \t]*([A-Za-z][A-Za-z ()/,&-]{0,38}?)[ \t]*:(?:[ \t]+|$)(.*)$")
_UNDERSCORE_LINE = re.compile(r"^[ \t]*_{10,}[ \t]*$")
_WS = re.compile(r"\s+")
_BANNER = re.compile(r"^\s*(?:FINAL|PRELIMINARY|WET READ)? ?REPORT\s*$", re.I)


@dataclass
class Report:
    """Parsed report. Section texts keep their line breaks; ``None`` when absent."""

    findings: str | None = None
    impression: str | None = None
    fallback: bool = False  # neither section found; ``impression`` holds the last paragraph
    sections: list[tuple[str, str]] = field(default_factory=list)  # every section in order (incl. duplicates)


def normalize_ws(text: str | None) -> str | None:
    """Unwrap lines and collapse whitespace; ``___`` (de-identified text) is kept. Empty -> None."""
    if text is None:
        return None
    t = " ".join(text.split())  # str.split() and re's \s agree on what whitespace is; split is faster
    return t or None


def header_name(raw: str) -> str | None:
    """Normalised section name of a raw header, or None if ``raw`` is not a header we accept."""
    key = _WS.sub(" ", raw.strip().lower())
    if key in HEADER_NAMES:
        return HEADER_NAMES[key]
    if raw.strip().upper() != raw.strip() or not any(c.isalpha() for c in raw):
        return None  # lower/Title case and unknown: ordinary text with a colon ("Heart size: normal")
    for target in ("findings", "impression"):
        if difflib.SequenceMatcher(None, key, target).ratio() >= 0.85:
            return target
    return key  # an upper-case header we do not know: keep it under its own (lower-case) name


_HEADER_LINE = re.compile(_HEADER.pattern, re.M)
_NAME_CACHE: dict[str, str | None] = {}


def _header_name_cached(raw: str) -> str | None:
    try:
        return _NAME_CACHE[raw]
    except KeyError:
        if len(_NAME_CACHE) > 100_000:
            _NAME_CACHE.clear()
        name = _NAME_CACHE[raw] = header_name(raw)
        return name


def _section_bodies(text: str) -> list[tuple[str, str]]:
    """``[(name, "\n".join(body lines))]`` of ``_split_sections(text.split("\n"))``, found with one regex
    pass over the text instead of a loop over its lines."""
    out: list[tuple[str, str]] = []
    name, start, first = "preamble", 0, None
    n = len(text)
    pos = text.find(":")
    while pos >= 0:  # only lines with a colon can be headers: visit those
        ls = text.rfind("\n", 0, pos) + 1
        le = text.find("\n", pos)
        if le < 0:
            le = n
        m = _HEADER_LINE.match(text, ls, le)
        pos = text.find(":", le)
        if m is None:
            continue
        new = _header_name_cached(m.group(1))
        if new is None:
            continue
        end = ls - 1  # the line break before the header line
        body = text[start:end] if start <= end else None
        out.append((name, body if first is None else (first if body is None else first + "\n" + body)))
        g2 = m.group(2)
        name, start, first = new, le + 1, (g2 if g2.strip() else None)
    end = len(text)
    body = text[start:end] if start <= end else None
    out.append((name, (body or "") if first is None else (first if body is None else first + "\n" + body)))
    return [(n, b or "") for n, b in out]


def _split_sections(lines: list[str]) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = [("preamble", [])]
    for line in lines:
        m = _HEADER.match(line) if ":" in line else None  # most lines have no colon: skip the regex
        name = header_name(m.group(1)) if m else None
        if name is not None:
            out.append((name, [m.group(2)] if m.group(2).strip() else []))
        else:
            out[-1][1].append(line)
    return out


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n[ \t]*\n", text) if p.strip()]


def _addendum_and_body(text: str) -> tuple[list[str], str]:
    """(addendum lines, the report below them without its banner line). Addenda come first, then a line
    of underscores; a first line that is a ``FINAL REPORT`` banner is dropped. Without underscores (most
    reports) the text is not split into lines at all."""
    if "__________" not in text:
        nl = text.find("\n")
        if _BANNER.match(text if nl < 0 else text[:nl]):
            return [], "" if nl < 0 else text[nl + 1 :]
        return [], text
    lines = text.split("\n")
    addendum: list[str] = []
    for i, line in enumerate(lines):  # addenda, underscores, then the report
        if _UNDERSCORE_LINE.match(line):
            addendum, lines = lines[:i], lines[i + 1 :]
            break
    if lines and _BANNER.match(lines[0]):
        lines = lines[1:]
    return addendum, "\n".join(lines)


def parse_report(text: str) -> Report:
    """Split a report into sections. Never raises on odd text; an empty report gives an empty Report."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    addendum, main = _addendum_and_body(text)
    rep = Report()
    sections = rep.sections
    if any(s.strip() for s in addendum):
        body = "\n".join(addendum)
        sections.append(("addendum", body.strip("\n")))
    for name, body in _section_bodies(main):
        body = body.strip("\n")
        if name == "findings" or name == "impression":  # the last non-empty one wins, as officially
            if body and not body.isspace():
                if name == "findings":
                    rep.findings = body
                else:
                    rep.impression = body
        elif name == "preamble" and (not body or body.isspace()):
            continue
        sections.append((name, body))
    if rep.findings is None and rep.impression is None:
        paras = _paragraphs(main)
        if paras:
            last = paras[-1]
            m = _HEADER.match(last.strip("\n").split("\n")[0])
            if m and header_name(m.group(1)) is not None:  # "HEADER: text": drop the header itself
                last = "\n".join([m.group(2)] + last.strip("\n").split("\n")[1:])
            if last.strip():
                rep.impression = last
                rep.fallback = True
    return rep
