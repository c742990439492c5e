"""`cxrprep templates check|preview`: validate a template file; list what it expands to."""

from __future__ import annotations

import typer

from cxrprep.cli.edge import error_line, errors

_DATASETS = ("all", "chexpert", "chestx-ray14")


def check(
    files: list[str] = typer.Argument(
        ..., help="Template files, e.g. prompts/default.yaml, or packaged names (default, eval)"
    ),
    lint_: bool = typer.Option(True, "--lint/--no-lint", help="Also check every rendered sentence (see below)"),
    dataset: str = typer.Option(
        "all",
        "--dataset",
        help="Training files must cover every class of this dataset: chexpert, chestx-ray14 or all (both)",
    ),
    qualifiers: str = typer.Option(
        None, "--qualifiers", help="Check the pools as rendered with qualifiers none|sample (default: the file's)"
    ),
) -> None:
    """Report YAML and template errors with file:line:column, lint every rendered sentence, and check that a
    training file covers its dataset. Exit 2 if a file does not parse (as every command does for a bad
    template file), 1 if it parses but has lint defects, has no sentences at all, or leaves a class of
    --dataset without positive or negative sentences (all such classes are named at once).

    Lint defects (FILE:LINE:COL of the template string, the kind, the sentence, its pool): malformed
    (no capital, no full stop, doubled word, stray slot), double-verb ("There is X is seen."),
    qualified-negative ("No apical left pneumothorax."), article-after-modifier ("Possible a PICC
    line."), missing-article ("There is nodule."; write the slot as {a}), a-an ("an nodule"), agreement
    ("Support devices is seen.", "There are a effusion."), duplicate (a sentence twice in one pool).
    A file with a top-level `verbatim: SOURCE` key transcribes a paper's prompts word for word: it is
    exempt from the style kinds (all but duplicate), and the line says how many sentences they flag.

    Example: cxrprep templates check prompts/default.yaml prompts/eval.yaml
    """
    if dataset not in _DATASETS:
        raise typer.BadParameter(f"{dataset!r} is not one of {', '.join(_DATASETS)}", param_hint="--dataset")
    if qualifiers not in (None, "none", "sample"):
        raise typer.BadParameter(f"{qualifiers!r} is not one of none, sample", param_hint="--qualifiers")
    results = [_check_file(f, lint_, dataset, qualifiers) for f in files]  # every file is checked
    if "broken" in results:
        raise typer.Exit(2)
    if "bad" in results:
        raise typer.Exit(1)


def _coverage_problem(t, f: str, dataset: str) -> str | None:
    """One line when ``t`` has no sentences or (a training file) leaves classes of ``dataset`` uncovered."""
    from cxrprep.text.template_coverage import DATASET_CLASSES, describe, is_training_file, missing_sentences

    if not t.classes and not t.binary and not t.multiclass:
        return f"{f}: no sentences: the file has no classes (training) and no binary or multiclass prompts (eval)"
    if not is_training_file(t):
        return None
    names = DATASET_CLASSES if dataset == "all" else {dataset: DATASET_CLASSES[dataset]}
    classes: dict[str, str] = {}  # canonical -> the first dataset spelling (Effusion is Pleural Effusion)
    for c in (c for cs in names.values() for c in cs):
        classes.setdefault(t.canonical(c), c)
    classes = list(classes.values())
    missing = missing_sentences(t, classes)
    if not missing:
        return None
    return (
        f"{f}: {len(missing)} of {len(classes)} classes of {' and '.join(names)} lack sentences: "
        f"{describe(missing)}; add them under classes: (or check one dataset with --dataset)"
    )


def _check_file(f: str, lint_: bool, dataset: str, qualifiers: str | None) -> str:
    """Check one file and print its lines -> "ok" | "bad" | "broken"."""
    from collections import Counter

    from cxrprep.text.template_lint import enforced
    from cxrprep.text.templates import TemplateError, expansion_counts, lint, load_templates

    try:
        t = load_templates(f, qualifiers)
    except TemplateError as e:  # the next files are still checked
        error_line(e)
        return "broken"
    found = lint(t) if lint_ else []
    defects = enforced(found, t.verbatim)
    for d in defects:
        typer.echo(f"{d}", err=True)
    if defects:
        kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(Counter(d.kind for d in defects).items()))
        typer.echo(f"{f}: {len(defects):,} lint defects ({kinds})", err=True)
    problem = _coverage_problem(t, f, dataset)
    if problem:
        typer.echo(problem, err=True)
    if defects or problem:
        return "bad"
    n = sum(sum(v.values()) for v in expansion_counts(t).values())
    if t.verbatim and lint_:
        how = f"verbatim from {t.verbatim}: style lint skipped, {len(found):,} sentences differ from our style"
    else:
        how = "lint clean" if lint_ else "not linted"
    typer.echo(
        f"{f}: ok ({len(t.classes)} classes, {n:,} expansions, {len(t.binary)} binary tasks, "
        f"{len(t.multiclass)} multi-class sets, qualifiers {t.qualifiers}, {how})"
    )
    return "ok"


def preview(
    file: str = typer.Argument(..., help="A template file or a packaged name (default, eval)"),
    cls: str = typer.Option(None, "--class", help="Only this class (dataset spellings accepted)"),
    limit: int = typer.Option(5, "--limit", help="Sentences shown per state (0 = all)"),
    as_json: bool = typer.Option(
        False, "--json", help="Print every class's expanded prompts as one JSON object (--limit ignored)"
    ),
    qualifiers: str = typer.Option(
        None, "--qualifiers", help="Show the pools as rendered with qualifiers none|sample (default: the file's)"
    ),
) -> None:
    """Show each class's expressions and sentences with counts.

    Example: cxrprep templates preview prompts/default.yaml --class Nodule --limit 0
    """
    from cxrprep.text.templates import STATES, TemplateError, load_templates

    if qualifiers not in (None, "none", "sample"):
        raise typer.BadParameter(f"{qualifiers!r} is not one of none, sample", param_hint="--qualifiers")
    with errors({TemplateError: 2}):
        t = load_templates(file, qualifiers)
    names = [t.canonical(cls)] if cls else sorted(t.classes)
    if cls and names[0] not in t.classes and names[0] not in t.binary:
        raise typer.BadParameter(
            f"no class {cls!r} in {file}; has {', '.join(sorted(t.classes) or sorted(t.binary))}",
            param_hint="--class",
        )
    if as_json:
        typer.echo(_preview_json(t, set(names) if cls else None))
        return
    cut = (lambda xs: xs) if limit == 0 else (lambda xs: xs[:limit])
    for name in names:
        if name in t.classes:
            c = t.classes[name]
            typer.echo(
                f"{name}: {len(c.expressions)} expressions (every state), {len(c.qualified)} qualified "
                f"(positive and uncertain only; qualifiers {t.qualifiers})"
            )
            for e in cut(c.expressions):
                typer.echo(f"    {e}")
            for e in cut(c.qualified):
                typer.echo(f"    {e}  [qualified]")
            for s in STATES:
                typer.echo(f"  {s}: {len(c.sentences[s])}")
                for x in cut(c.sentences[s]):
                    typer.echo(f"    {x}")
    for name, sets in sorted(t.binary.items()):
        if cls and name not in names:
            continue
        typer.echo(f"binary {name}: positive {len(sets['positive'])}, negative {len(sets['negative'])}")
        for k in ("positive", "negative"):
            for x in cut(sets[k]):
                typer.echo(f"    {k}: {x}")
    for set_name, classes in sorted(t.multiclass.items()):
        for name, prompts in classes.items():
            if cls and name not in names:
                continue
            typer.echo(f"multiclass {set_name} / {name}: {len(prompts)} prompts")
            for x in cut(prompts):
                typer.echo(f"    {x}")


def _preview_json(t, only: set[str] | None) -> str:
    """Every expanded prompt of a template file as JSON: ``classes`` (training sentences per state),
    ``binary`` (eval pairs) and ``multiclass`` (eval sets, duplicates kept), each list complete."""
    import json

    keep = (lambda n: True) if only is None else (lambda n: n in only)
    doc = dict(
        file=t.path,
        classes={n: dict(c.sentences) for n, c in sorted(t.classes.items()) if keep(n)},
        binary={n: sets for n, sets in sorted(t.binary.items()) if keep(n)},
        multiclass={s: {n: p for n, p in cl.items() if keep(n)} for s, cl in sorted(t.multiclass.items())},
    )
    return json.dumps(doc, indent=2, ensure_ascii=False)


def register(app: typer.Typer) -> None:
    tapp = typer.Typer(help="Validate and preview prompt template files (prompts/*.yaml).", no_args_is_help=True)
    app.add_typer(tapp, name="templates")

    tapp.command()(check)
    tapp.command()(preview)
