"""Reading CheXpert and ChestX-ray14 label CSVs into one row per study (polars), for ``cxrprep prompts`` and
``cxrprep chexpert-5x200``. The formats and splits are described in cxrprep/datasets/prompts.py."""

from __future__ import annotations

import zlib
from pathlib import Path

from cxrprep.labels import CHEXPERT_LABELS, NIH_LABELS

NIH_REQUIRED = ("Image Index", "Finding Labels", "Patient ID", "View Position")
CHEXPERT_REQUIRED = ("Path",) + CHEXPERT_LABELS
_VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": None}


def _read_label_csv(path: Path, required: tuple[str, ...], expected: str):
    """The CSV as strings with a ``_row`` index; ValueError naming the file when it is not a readable CSV
    or lacks one of the ``required`` columns (``expected`` says what such a CSV has)."""
    import polars as pl

    try:
        df = pl.read_csv(path, infer_schema_length=0).with_row_index("_row")
    except (pl.exceptions.NoDataError, pl.exceptions.ComputeError) as e:  # empty, not UTF-8, not a CSV
        raise ValueError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:200]})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; {expected}")
    return df


def _bad_value(df, col: str, allowed):
    """First row whose ``col`` is not in ``allowed`` (a 0- or 1-row frame)."""
    import polars as pl

    return df.filter(~pl.col(col).fill_null("").str.strip_chars().is_in(list(allowed))).head(1)


def chexpert_frame(path: Path):
    """Read and validate a CheXpert CSV (header, label values, Path shape; errors name row and column) ->
    polars frame with the label columns parsed to Int8 (1/0/-1/null) and _patient/_study/_split/_fl/_appa
    columns. Shared by ``cxrprep prompts`` and ``cxrprep chexpert-5x200``."""
    import polars as pl

    df = _read_label_csv(
        path, CHEXPERT_REQUIRED, "a CheXpert CSV has Path, Sex, Age, Frontal/Lateral, AP/PA and the 14 observations"
    )
    for c in CHEXPERT_LABELS:
        bad = _bad_value(df, c, _VALUES)
        if bad.height:
            raise ValueError(
                f"{path}: row {bad['_row'][0] + 2}, column {c!r}: value {bad[c][0]!r} is not 1.0, 0.0, -1.0 or blank"
            )
    parts = df["Path"].str.split("/")
    df = df.with_columns(
        parts.list.get(-3, null_on_oob=True).alias("_patient"),
        parts.list.get(-2, null_on_oob=True).alias("_study"),
        parts.list.get(-4, null_on_oob=True).alias("_split"),
    )
    bad = df.filter(pl.col("_patient").is_null() | ~pl.col("_patient").str.starts_with("patient")).head(1)
    if bad.height:
        raise ValueError(
            f"{path}: row {bad['_row'][0] + 2}, column 'Path': {bad['Path'][0]!r} is not "
            f".../patientNNNNN/studyN/viewK_*.jpg"
        )
    fl = df["Frontal/Lateral"] if "Frontal/Lateral" in df.columns else pl.Series([None] * df.height)
    appa = df["AP/PA"] if "AP/PA" in df.columns else pl.Series([None] * df.height)
    df = df.with_columns(pl.Series("_fl", fl), pl.Series("_appa", appa))
    lab = [
        pl.col(c).fill_null("").str.strip_chars().replace_strict(_VALUES, return_dtype=pl.Int8).alias(c)
        for c in CHEXPERT_LABELS
    ]
    return df.with_columns(lab)


def _chexpert_view(fl, appa):
    """Polars expression of a CheXpert row's view (LATERAL/LL/RL for laterals, AP/PA for frontals)."""
    import polars as pl

    appa_s = appa.fill_null("").str.strip_chars()
    lateral = fl.fill_null("").str.strip_chars().str.to_lowercase() == "lateral"
    return (
        pl.when(lateral & appa_s.is_in(["", "LATERAL"]))
        .then(pl.lit("LATERAL"))
        .when(appa_s == "")
        .then(pl.lit(None, pl.String))
        .otherwise(appa_s.str.to_uppercase())
    )


def chexpert_studies(path: Path):
    """-> (polars frame with one row per study, sorted by study_id: study_id, subject_id, split, labels
    (first row's), conflict, paths, views, rows (CSV line numbers)); [(path, study_id, reason)] for rows
    that repeat an image already in their study)."""
    import polars as pl

    df = chexpert_frame(path).with_columns(
        pl.concat_list(list(CHEXPERT_LABELS)).alias("_labels"),
        _chexpert_view(pl.col("_fl"), pl.col("_appa")).alias("_view"),
        (pl.col("_patient") + "/" + pl.col("_study")).alias("study_id"),
    )
    first = df.unique(subset=["study_id", "Path"], keep="first", maintain_order=True)
    dups = []
    if first.height != df.height:
        extra = df.filter(~pl.col("_row").is_in(first["_row"].implode())).select("study_id", "Path", "_row")
        extra = extra.join(
            first.select("study_id", "Path", pl.col("_row").alias("_first")),
            on=["study_id", "Path"],
            how="left",
            maintain_order="left",
        )
        for sid, p, row, first_row in extra.iter_rows():
            dups.append(
                (
                    p,
                    sid,
                    f"duplicate image {p} in study {sid}: CSV lines {first_row + 2} and {row + 2}; the first is kept",
                )
            )
    g = (
        first.group_by("study_id", maintain_order=True)
        .agg(
            pl.col("_patient").first().alias("subject_id"),
            pl.col("_split").first().alias("_split"),
            pl.col("_labels").first().alias("labels"),
            pl.col("_labels").n_unique().alias("_n"),
            pl.col("Path").alias("paths"),
            pl.col("_view").alias("views"),
        )
        .with_columns(
            (pl.col("_n") > 1).alias("conflict"),
            pl.when(pl.col("_split") == "valid").then(pl.lit("validate")).otherwise(pl.lit("train")).alias("split"),
        )
        .drop("_n", "_split")
        .sort("study_id")
    )
    return g, dups


def read_chexpert(path: Path) -> list[dict]:
    """-> studies sorted by study_id: {study_id, subject_id, split, labels, images: [(rel path, view)]}."""
    return _study_dicts(chexpert_studies(path)[0])


def read_list(p: Path) -> set[str]:
    return {ln.strip() for ln in p.read_text().splitlines() if ln.strip()}


def _nih_split_lists(path: Path, split_lists: Path | None) -> tuple[Path, Path, bool]:
    """train_val_list.txt and test_list.txt in --split-lists (or beside the CSV), and whether both exist."""
    lists_dir = split_lists or path.parent
    tv, te = lists_dir / "train_val_list.txt", lists_dir / "test_list.txt"
    have_lists = tv.exists() and te.exists()
    if split_lists and not have_lists:
        raise ValueError(f"--split-lists {split_lists}: train_val_list.txt and test_list.txt not found there")
    return tv, te, have_lists


def _nih_split(df, test: list[str] | None):
    """``df`` with a ``split`` column: the official test list and an 80/20 patient hash for the rest, or a
    70/10/20 patient hash without the lists."""
    import polars as pl

    subjects = df["subject_id"].unique().to_list()
    h = pl.DataFrame(
        {"subject_id": subjects, "_h": [zlib.crc32(f"split:{s}".encode()) % 100 for s in subjects]},
        schema={"subject_id": pl.String, "_h": pl.Int64},
    )
    df = df.join(h, on="subject_id", how="left", maintain_order="left")
    if test is not None:
        split = (
            pl.when(pl.col("Image Index").is_in(test))
            .then(pl.lit("test"))
            .when(pl.col("_h") < 20)
            .then(pl.lit("validate"))
            .otherwise(pl.lit("train"))
        )
    else:
        split = (
            pl.when(pl.col("_h") < 20)
            .then(pl.lit("test"))
            .when(pl.col("_h") < 30)
            .then(pl.lit("validate"))
            .otherwise(pl.lit("train"))
        )
    return df.with_columns(split.alias("split"))


def _nih_duplicates(df, first) -> list[tuple[str, str, str]]:
    """(image, study_id, reason) for every row repeating an ``Image Index`` (the first row is kept)."""
    import polars as pl

    dups = []
    if first.height != df.height:
        extra = df.filter(~pl.col("_row").is_in(first["_row"].implode())).select("study_id", "Image Index", "_row")
        extra = extra.join(
            first.select("study_id", pl.col("_row").alias("_first")), on="study_id", how="left", maintain_order="left"
        )
        for sid, img, row, first_row in extra.iter_rows():
            dups.append(
                (img, sid, f"duplicate Image Index {img}: CSV lines {first_row + 2} and {row + 2} (the first is kept)")
            )
    return dups


def nih_studies(path: Path, split_lists: Path | None):
    """-> (polars frame, one row per image = study, sorted by study_id: study_id, subject_id, split,
    labels (1/0 in NIH_LABELS order), paths, views, conflict); [(source, study_id, reason)] for rows that
    repeat an ``Image Index``)."""
    import polars as pl

    df = _read_label_csv(
        path,
        NIH_REQUIRED,
        "a ChestX-ray14 Data_Entry CSV has Image Index, Finding Labels, Follow-up #, Patient ID, ...",
    )
    tv, te, have_lists = _nih_split_lists(path, split_lists)
    names = pl.col("Finding Labels").fill_null("").str.split("|").list.eval(pl.element().str.strip_chars())
    df = df.with_columns(names.alias("_names"))
    bad = df.select("_row", "_names").explode("_names").filter(~pl.col("_names").is_in(list(NIH_LABELS))).head(1)
    if bad.height:
        raise ValueError(
            f"{path}: row {bad['_row'][0] + 2}, column 'Finding Labels': {bad['_names'][0]!r} is not "
            f"one of {', '.join(NIH_LABELS)}"
        )
    pid = pl.col("Patient ID").fill_null("").str.strip_chars()
    subject = pl.when(pid.str.contains(r"^[0-9]+$")).then(pid.str.strip_chars_start("0").str.zfill(8)).otherwise(pid)
    df = df.with_columns(
        pl.col("Image Index").str.replace(r"\.[^./]*$", "").alias("study_id"),
        subject.alias("subject_id"),
        pl.concat_list([pl.col("_names").list.contains(n).cast(pl.Int8) for n in NIH_LABELS]).alias("labels"),
        pl.col("View Position").fill_null("").str.strip_chars().str.to_uppercase().alias("_view"),
    )
    df = _nih_split(df, sorted(read_list(te)) if have_lists else None)
    df = df.with_columns(
        pl.concat_list([pl.col("Image Index")]).alias("paths"),
        pl.concat_list([pl.when(pl.col("_view") == "").then(pl.lit(None, pl.String)).otherwise(pl.col("_view"))]).alias(
            "views"
        ),
        pl.lit(False).alias("conflict"),
    )
    first = df.unique(subset="study_id", keep="first", maintain_order=True)
    dups = _nih_duplicates(df, first)
    out = first.select("study_id", "subject_id", "split", "labels", "paths", "views", "conflict").sort("study_id")
    return out, dups


def read_nih(path: Path, split_lists: Path | None) -> list[dict]:
    return _study_dicts(nih_studies(path, split_lists)[0])  # conflict: always False (one image per study)


def _study_dicts(g) -> list[dict]:
    """The rows of a studies frame (chexpert_studies, nih_studies) as plain dicts, images as (path, view)."""
    return [
        dict(
            study_id=r["study_id"],
            subject_id=r["subject_id"],
            split=r["split"],
            labels=list(r["labels"]),
            images=list(zip(r["paths"], r["views"])),
            conflict=r["conflict"],
        )
        for r in g.iter_rows(named=True)
    ]


def resolve_image(rel: str, root: Path) -> Path:
    p = root / rel
    if p.exists():
        return p
    parts = Path(rel).parts
    if parts and parts[0].startswith("CheXpert-v1.0"):
        alt = root.joinpath(*parts[1:])
        if alt.exists():
            return alt
    return p
