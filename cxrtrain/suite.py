"""``cxrtrain bench-suite``: every CXR-CLIP benchmark found under the shard roots, one table.

Benchmarks (dataset folder name -> task, metric), as in seed 003's Tables 2 and 3:

=======================  ===========================================  =====================
dataset                  zero-shot task (CXR-CLIP prompt sets)          linear probe
=======================  ===========================================  =====================
vindr-cxr                binary per class, mean AUROC                  10% / 100% (AUROC)
rsna-pneumonia           binary Pneumonia, AUROC                       10% / 100% (AUROC)
siim-acr-pneumothorax    binary Pneumothorax, AUROC                    10% / 100% (AUROC)
chexpert-5x200           5-way accuracy (ZS-ACC)                       -
mimic-5x200              5-way accuracy (ZS-ACC) + retrieval           -
mimic-cxr                image->text retrieval R@1/5/10 (test)         -
openi                    image->text retrieval R@1/5/10                -
=======================  ===========================================  =====================

Every number is on ``--split`` (default test; probes select on validate). RSUM = the sum of the image->text
recalls over the retrieval columns present (CXR-CLIP's "Total RSUM" sums R@1/5/10 over its retrieval sets).
A benchmark that is not under the roots is listed as ``missing``; one that is present but has no rows in
the split (or no train/validate rows for a probe) is listed with that reason. Outputs: OUT/suite.md,
OUT/suite.json, and the underlying OUT/eval/metrics.* and OUT/probe/fewshot.*.
"""

from __future__ import annotations

from pathlib import Path

from cxrtrain.evaluate import EvalConfig, EvalUsageError, run_eval, strict_json

CLASSIFICATION = ("vindr-cxr", "rsna-pneumonia", "siim-acr-pneumothorax")
MULTICLASS = ("chexpert-5x200", "mimic-5x200")
RETRIEVAL = ("mimic-5x200", "mimic-cxr", "openi")  # --protocol cxr-clip: chexpert-5x200, mimic-cxr, openi
BENCHMARKS = tuple(dict.fromkeys(CLASSIFICATION + MULTICLASS + RETRIEVAL))


def retrieval_sets(cfg: EvalConfig) -> tuple[str, ...]:
    """The retrieval columns (and RSUM terms) of the protocol (cxrtrain/protocols.py)."""
    from cxrtrain.protocols import protocol

    return tuple(protocol(cfg.protocol)["retrieval_datasets"])


PROBE_FRACTIONS = (0.1, 1.0)


def run_suite(
    checkpoint,
    shard_roots: list[str],
    out: Path,
    cfg: EvalConfig,
    probe: bool = True,
    probe_seeds: int = 1,
    probe_max_epochs: int = 1000,
    log=print,
) -> dict:
    from cxrprep.shards import open_datasets

    present = {d.name for d in open_datasets(shard_roots)} & set(BENCHMARKS)
    m = run_eval(checkpoint, shard_roots, out / "eval", cfg, only=present, missing_split="note", log=log)
    probes: dict[str, dict] = {}
    if probe and cfg.protocol == "cxr-clip":  # fixed epochs, augmentation, warm-up + cosine (probe_cxrclip.py)
        from cxrtrain.probe_cxrclip import suite_probes

        probes = suite_probes(checkpoint, shard_roots, sorted(present & set(CLASSIFICATION)), cfg.device, log)
        (out / "probe").mkdir(parents=True, exist_ok=True)
        (out / "probe" / "cxr-clip-probe.json").write_text(strict_json(probes))
    elif probe:
        from cxrtrain.fewshot import FewshotConfig, run_fewshot

        fcfg = FewshotConfig(
            shots=(),
            fractions=PROBE_FRACTIONS,
            seeds=probe_seeds,
            modes=("linear",),
            prompts=cfg.prompts,
            device=cfg.device,
            max_epochs=probe_max_epochs,
        )
        for name in sorted(present & set(CLASSIFICATION)):
            ds_dir = next(d.dir for d in open_datasets(shard_roots) if d.name == name)
            try:
                r = run_fewshot(checkpoint, [str(ds_dir)], out / "probe" / name, fcfg, log=log)
                probes[name] = r["datasets"][name]["linear_probe"]
            except EvalUsageError as e:
                probes[name] = {"note": str(e)}
    table = suite_table(m, probes, present, cfg, probe)
    res = dict(
        checkpoint=m["checkpoint"],
        checkpoint_sha256=m["checkpoint_sha256"],
        split=cfg.split,
        ensemble=cfg.ensemble,
        prompts=cfg.prompts,
        protocol=cfg.protocol,
        prompts_file=m["prompts_file"],
        benchmarks=table["cells"],
        missing=sorted(set(BENCHMARKS) - present),
        rsum=table["rsum"],
        rsum_of=table["rsum_of"],
    )
    (out / "suite.json").write_text(strict_json(res))
    (out / "suite.md").write_text(table["md"])
    return res


def suite_table(m: dict, probes: dict, present: set[str], cfg: EvalConfig, probe: bool) -> dict:
    cells, rsum, rsum_of = _suite_cells(m, probes, present, cfg, probe)
    md = _suite_md(cells, rsum, rsum_of, present, cfg, probe)
    return dict(cells=cells, rsum=rsum if rsum_of else None, rsum_of=rsum_of, md=md)


def _suite_cells(m: dict, probes: dict, present: set[str], cfg: EvalConfig, probe: bool):
    """One cell per benchmark (value, split, reason when not scored) and the retrieval RSUM."""
    ds = m["datasets"]
    cells: dict[str, dict] = {}

    def status(name: str) -> str | None:
        if name not in present:
            return "missing"
        return ds.get(name, {}).get("note")

    for name in CLASSIFICATION:
        c = dict(metric="AUROC", split=cfg.split)
        st = status(name)
        b = ds.get(name, {}).get("binary")
        if st:
            c["zero_shot"], c["zero_shot_reason"] = None, st
        elif b:
            c.update(zero_shot=b["macro_auroc"], classes=b["macro_classes"], classes_with_prompts=b["macro_of"])
        if probe and name in present:
            p = probes.get(name, {})
            for key in ("10%", "100%"):
                c[f"probe_{key}"] = p.get(key, {}).get("mean") if "note" not in p else None
            if "note" in p:
                c["probe_reason"] = p["note"]
        cells[name] = c
    for name in MULTICLASS:
        st = status(name)
        mc = ds.get(name, {}).get("multiclass", {})
        r = next(iter(mc.values()), None)
        cells[f"{name} ZS-ACC"] = dict(
            metric="accuracy",
            split=cfg.split,
            value=None if st or not r else r["accuracy"],
            n=None if not r else r["n"],
            reason=st or (None if r else "no 5-way rows"),
        )
    rsum, rsum_of = 0.0, []
    retrieval = retrieval_sets(cfg)
    for name in retrieval:
        st = status(name)
        r = ds.get(name, {}).get("retrieval")
        c = dict(metric="R@1/5/10 image->text", split=cfg.split, reason=st or (None if r else "no report text"))
        if r and not st:
            c.update(
                {k: r["image_to_text"][k] for k in ("R@1", "R@5", "R@10")},
                images=r["images"],
                text_to_image=r["text_to_image"],
            )
            rsum += sum(r["image_to_text"].values())
            rsum_of.append(name)
        cells[f"{name} retrieval"] = c
    return cells, rsum, rsum_of


def _suite_md(cells: dict, rsum: float, rsum_of: list[str], present: set[str], cfg: EvalConfig, probe: bool) -> str:
    """suite.md: one table row of every benchmark's number, then what was not scored and why."""
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
    retrieval = retrieval_sets(cfg)
    cls_head = " | ".join(f"{n} ZS" + (f" | {n} 10% | {n} 100%" if probe else "") for n in CLASSIFICATION)
    mc_head = " | ".join(f"{n} ZS-ACC" for n in MULTICLASS)
    ret_head = " | ".join(f"{n} R@1 | {n} R@5 | {n} R@10" for n in retrieval)
    ncols = len(CLASSIFICATION) * (3 if probe else 1) + len(MULTICLASS) + 3 * len(retrieval) + 1
    vals = []
    for n in CLASSIFICATION:
        c = cells[n]
        vals.append("missing" if n not in present else pct(c.get("zero_shot")))
        if probe:
            vals += ["missing" if n not in present else pct(c.get(f"probe_{k}")) for k in ("10%", "100%")]
    for n in MULTICLASS:
        c = cells[f"{n} ZS-ACC"]
        vals.append("missing" if n not in present else pct(c["value"]))
    for n in retrieval:
        c = cells[f"{n} retrieval"]
        vals += ["missing" if n not in present else pct(c.get(k)) for k in ("R@1", "R@5", "R@10")]
    vals.append(f"{100 * rsum:.1f}" if rsum_of else "n/a")
    lines = [
        f"CXR-CLIP benchmark suite, protocol **{cfg.protocol}**: split **{cfg.split}**, prompts {cfg.prompts}, "
        f"ensemble {cfg.ensemble}; "
        f"classification in AUROC x100 (VinDr: mean over its classes with prompts), 5x200 in accuracy x100, "
        f"retrieval image->text recall x100; linear probes select on validate.",
        "",
        f"| {cls_head} | {mc_head} | {ret_head} | RSUM |",
        "|---" * ncols + "|",
        "| " + " | ".join(vals) + " |",
        "",
    ]
    notes = [
        f"- {n}: {c.get('zero_shot_reason') or c.get('reason') or c.get('probe_reason')}"
        for n, c in cells.items()
        if (c.get("zero_shot_reason") or c.get("reason") or c.get("probe_reason"))
    ]
    if notes:
        lines += ["Not scored:", *notes, ""]
    if rsum_of:
        lines.append(f"RSUM = sum of image->text R@1/5/10 over {', '.join(rsum_of)}.")
    return "\n".join(lines) + "\n"


__all__ = ["run_suite", "suite_table", "BENCHMARKS"]
