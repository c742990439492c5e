"""Does a training template file cover a dataset? ``cxrprep templates check`` fails a file that leaves any
class of its dataset without positive or negative sentences (No Finding needs only positives: it is never
negated), naming every such class at once; ``cxrprep prompts`` refuses such a file the same way."""

from __future__ import annotations

from cxrprep.labels import CHEXPERT_LABELS, NIH_LABELS

#: the label sets ``cxrprep prompts`` renders (dataset -> class names as the dataset spells them)
DATASET_CLASSES = {"chexpert": tuple(CHEXPERT_LABELS), "chestx-ray14": tuple(NIH_LABELS)}


def needed_states(name: str) -> tuple[str, ...]:
    return ("positive",) if name == "No Finding" else ("positive", "negative")


def missing_sentences(t, class_names) -> dict[str, list[str]]:
    """{class (dataset spelling): [states without a sentence]} for the classes ``t`` (a Templates) leaves
    without positive or negative sentences; empty when the file covers them all."""
    out: dict[str, list[str]] = {}
    for name in class_names:
        c = t.classes.get(t.canonical(name))
        gaps = [s for s in needed_states(name) if c is None or not c.sentences.get(s)]
        if gaps:
            out[name] = gaps
    return out


def describe(missing: dict[str, list[str]]) -> str:
    """``Hernia (positive, negative), Mass (negative)``."""
    return ", ".join(f"{name} ({', '.join(states)})" for name, states in missing.items())


def is_training_file(t) -> bool:
    """A file with ``classes`` (training sentences) as opposed to an evaluation file (binary/multiclass)."""
    return bool(t.classes)
