"""`cxrprep templates check|preview`: validate a template file; list what it expands to."""

from __future__ import annotations

import typer

from cxrprep.cli.edge import error_line, errors


def check(
    files: list[str] = typer.Argument(
        ..., help="Template files, e.g. prompts/default.yaml, or packaged names (default, eval)"
    ),
    lint_: bool = typer.Option(True, "--lint/--no-lint", help="Also check every rendered sentence (see below)"),
) -> None:
    """Report YAML and template errors with file:line:column, and lint every rendered sentence. Exit 2
    if a file does not parse (as every command does for a bad template file), 1 if it parses but has
    lint defects.

    Lint defects (FILE:LINE:COL of the template string, the kind, the sentence, its pool): malformed
    (no capital, no full stop, doubled word, stray slot), double-verb ("There is X is seen."),
    qualified-negative ("No apical left pneumothorax."), article-after-modifier ("Possible a PICC
    line."), agreement ("Support devices is seen."), duplicate (a sentence twice in one pool).

    Example: cxrprep templates check prompts/default.yaml prompts/eval.yaml
    """
    from collections import Counter

    from cxrprep.text.templates import TemplateError, expansion_counts, lint, load_templates

    bad = broken = 0
    for f in files:
        try:
            t = load_templates(f)
        except TemplateError as e:  # the next files are still checked
            error_line(e)
            broken += 1
            continue
        n = sum(sum(v.values()) for v in expansion_counts(t).values())
        defects = lint(t) if lint_ else []
        for d in defects:
            typer.echo(f"{d}", err=True)
        if defects:
            bad += 1
            kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(Counter(d.kind for d in defects).items()))
            typer.echo(f"{f}: {len(defects):,} lint defects ({kinds})", err=True)
            continue
        typer.echo(
            f"{f}: ok ({len(t.classes)} classes, {n:,} expansions, {len(t.binary)} binary tasks, "
            f"{len(t.multiclass)} multi-class sets{', lint clean' if lint_ else ''})"
        )
    if broken:
        raise typer.Exit(2)
    if bad:
        raise typer.Exit(1)


def preview(
    file: str = typer.Argument(..., help="A template file or a packaged name (default, eval)"),
    cls: str = typer.Option(None, "--class", help="Only this class (dataset spellings accepted)"),
    limit: int = typer.Option(5, "--limit", help="Sentences shown per state (0 = all)"),
    as_json: bool = typer.Option(
        False, "--json", help="Print every class's expanded prompts as one JSON object (--limit ignored)"
    ),
) -> None:
    """Show each class's expressions and sentences with counts.

    Example: cxrprep templates preview prompts/default.yaml --class Nodule --limit 0
    """
    from cxrprep.text.templates import STATES, TemplateError, load_templates

    with errors({TemplateError: 2}):
        t = load_templates(file)
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
                f"(positive and uncertain only)"
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
