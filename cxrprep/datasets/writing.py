"""The ShardWriter of a dataset command's run, opened the same way by every command that converts images."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from cxrprep.labels import CHEXPERT_LABELS, COMPETITION_TASKS
from cxrprep.shards import ShardWriter


def command_writer(
    out: Path, dataset: str, cfg, command: str, config: dict, label_names: Sequence[str] = CHEXPERT_LABELS, **kw
) -> ShardWriter:
    """A ShardWriter for ``command``'s run configured by ``cfg``: its image settings are recorded in the
    manifest when ``cfg.images`` is on (text-only runs record none); ``kw`` goes to ShardWriter as is."""
    image_settings = cfg.image_settings.manifest() if cfg.images else None
    return ShardWriter(
        out, dataset, config=config, label_names=label_names, command=command, image_settings=image_settings, **kw
    )


def five_by_200_writer(out: Path, dataset: str, cfg, command: str, config: dict, selection: str) -> ShardWriter:
    """The writer of a 5x200 benchmark (CheXpert or MIMIC): the manifest names the five competition classes
    and how the images were selected."""
    return command_writer(
        out, dataset, cfg, command, config, extra_manifest={"classes": list(COMPETITION_TASKS), "selection": selection}
    )


def write_patients(folder: Path, patients: Iterable[str]) -> None:
    """``folder/patients.txt``: the distinct ``patients``, sorted, one a line (written atomically, so a
    benchmark's patient list can be excluded from training)."""
    tmp = folder / ".tmp-patients.txt"
    tmp.write_text("".join(p + "\n" for p in sorted(set(patients))))
    tmp.replace(folder / "patients.txt")
