"""Word-list grids in eval prompt files (the ``grids`` section): GLoRIA-style multi-class prompt sets.

A grid names, per class, a few word lists (any names: ``severity``, ``subtype``, ``location``...). The
class's prompts are every combination, the lists walked **in the order the file writes them** (the first
list outermost), each prompt the words joined with one space and stripped at both ends::

    grids:
      chexpert-5x200:
        Atelectasis:
          severity: ["", mild, minimal]
          subtype: [subsegmental atelectasis, linear atelectasis]
          location: [at the mid lung zone, at the lung bases]

gives 3 x 2 x 2 = 12 prompts, ``subsegmental atelectasis at the mid lung zone`` first. Unlike the template
grammar of ``multiclass`` the prompts are kept **verbatim** (no capital letter added, case kept) and
**duplicates are kept**: a word listed twice yields its prompts twice, so a prompt set scored by the mean
similarity over its prompts weights them double. This is how a published generator's list is reproduced
string for string (prompts/gloria.yaml), and how an eval file carries a prompt's weight.
"""

from __future__ import annotations

import itertools

from cxrprep.text.template_yaml import string_items

MAX_GRID_PROMPTS = 100_000  # per class


def expand_grid(lists: list[list[str]]) -> list[str]:
    """Every combination of ``lists`` (first list outermost), words joined by one space, ends stripped;
    duplicates and case kept."""
    return [" ".join(words).strip() for words in itertools.product(*lists)]


def _word_lists(body, where: str, src) -> list[list[str]]:
    if not isinstance(body, dict) or not body:
        raise src.error(f"{where} must map word-list names (severity, subtype, ...) to lists of words")
    lists, total = [], 1
    for lname, (words, lsrc) in body.items():
        if not isinstance(words, list) or not words:
            raise lsrc.error(f"{where}.{lname} must be a non-empty list of words ('' is the empty word)")
        got = [w for w, _ in string_items(words, f"{where}.{lname}", lsrc)]
        total *= len(got)
        if total > MAX_GRID_PROMPTS:
            raise lsrc.error(f"{where} expands to more than {MAX_GRID_PROMPTS:,} prompts; use fewer words")
        lists.append(got)
    return lists


def load_grids(section, cls_name) -> dict[str, dict[str, list[str]]]:
    """The ``grids`` section of a parsed template file (values wrapped as ``(value, Src)`` by the loader)
    -> ``{set: {class: [prompt, ...]}}``. ``cls_name(name, src, any_name=True)`` canonicalises a class."""
    smap, ssrc = section
    if not isinstance(smap, dict):
        raise ssrc.error("grids must map a prompt-set name (e.g. chexpert-5x200) to classes")
    out: dict[str, dict[str, list[str]]] = {}
    for set_name, (classes, nsrc) in smap.items():
        if not isinstance(classes, dict) or not classes:
            raise nsrc.error(f"grids.{set_name} must map classes to word lists")
        out[set_name] = {}
        for cname, (body, csrc) in classes.items():
            prompts = expand_grid(_word_lists(body, f"grids.{set_name}.{cname}", csrc))
            if not any(prompts):
                raise csrc.error(f"grids.{set_name}.{cname} expands to empty prompts only")
            out[set_name][cls_name(cname, csrc, any_name=True)] = prompts
    return out
