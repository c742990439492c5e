"""Benchmark: `cxrprep reports --no-images` vs the official MIMIC-CXR section parser, same corpus, same run.

    .venv/bin/python bench/bench_reports.py [--corpus realistic] [--n N] [--runs 5] [--workers 2] [--memory]

* Corpus: ``synthetic`` (default, 200,000 reports): examples/synth_reports.py, whose sentences repeat 99% of
  the time; ``realistic`` (40,000): bench/realistic_reports.py, composed sentences, most of them distinct
  (its statistics are printed first). Generated once under bench/out/. ``--memory`` adds a corpus of N/10
  for the memory comparison (peak RSS at N vs N/10).
* Runs: ``--runs`` times both programs on the same corpus, alternating which goes first; prints each run,
  then the median, min and max of the wall-time ratio official / cxrkit (>= 1: cxrkit is faster).
* Baseline: MIT-LCP/mimic-cxr txt/create_section_files.py + section_parser.py (sections only, one process,
  writes CSVs). Not shipped with cxrkit: put the two files in bench/out/official/ (gitignored), e.g. from a
  clone: git -C mimic-cxr show HEAD:txt/section_parser.py > bench/out/official/section_parser.py (same for
  create_section_files.py; commit 31901464793d0bb23835092f05bd1aba6af7baff was used). Skipped with a note
  when absent.
* cxrkit: the full pipeline (read, sections, spaCy sentences, Parquet shards), ``--workers`` processes.
* Before timing, both programs are set up as an installed copy would be: their sources are byte-compiled
  (``compileall``; this machine sets PYTHONDONTWRITEBYTECODE, so an editable checkout would otherwise
  compile cxrprep on every start, about 0.05 s), and cxrkit runs once on a few reports, which writes its
  spaCy tokenizer rules file (cxrprep.text.chunk_tokenizer) if this machine has none yet, as any first run
  does. The rules file holds spaCy's rules, never report text. Every report file is then read once, so
  both programs are timed on a warm page cache (run 1 would otherwise pay for a cold one alone).
Prints reports/s for both, the ratio, peak memory (RSS of the process tree, sampled every 50 ms) and the
CPU time (user + sys of the whole process tree), which a busy shared machine disturbs less than wall time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "examples"))


def tree_rss(pid: int) -> int:
    """RSS in bytes of pid and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    stack += [int(x) for x in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd: list[str], cwd: Path | None = None) -> tuple[float, int]:
    """-> (seconds, peak tree RSS bytes); the tree's CPU seconds go to ``run.cpu``."""
    c0 = _children_cpu()
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, HF_HUB_OFFLINE="1")
    )
    peak = [0]

    def sample():
        while p.poll() is None:
            peak[0] = max(peak[0], tree_rss(p.pid))
            time.sleep(0.05)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, err = p.communicate()
    th.join()
    dt = time.perf_counter() - t0
    run.cpu = _children_cpu() - c0
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-2000:]}")
    return dt, peak[0]


def corpus(kind: str, n: int) -> Path:
    """The seeded corpus of ``kind`` (synthetic: examples/synth_reports.py, realistic:
    bench/realistic_reports.py) with ``n`` reports under bench/out/, generated once."""
    if kind == "realistic":
        from realistic_reports import write_corpus
    else:
        from synth_reports import write_corpus

    root = HERE / "out" / (f"corpus-{n}" if kind == "synthetic" else f"corpus-{kind}-{n}")
    if not (root / ".done").exists():
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        write_corpus(root, n, seed=0)
        (root / ".done").write_text("ok")
        print(f"generated {n:,} {kind} reports in {time.perf_counter() - t:.1f} s")
    return root


def stats(root: Path) -> dict:
    """The corpus's text statistics (bench/realistic_reports.corpus_stats), computed once and kept beside it."""
    import json

    from realistic_reports import corpus_stats

    p = root / "stats.json"
    if not p.exists():
        p.write_text(json.dumps(corpus_stats(root / "files")))
    return json.loads(p.read_text())


def run_cxrkit(root: Path, out: Path, workers: int) -> tuple[float, int, float]:
    """-> (seconds, peak tree RSS, CPU seconds) of ``cxrprep reports --no-images`` on ``root``."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "cxrprep.cli.app", "reports", str(root), "--out", str(out), "--no-images"]
    dt, rss = run(cmd + ["--workers", str(workers), "--max-failed", "100%"])
    return dt, rss, run.cpu


def run_official(root: Path, out: Path, official: Path) -> tuple[float, int, float]:
    """-> (seconds, peak RSS, CPU seconds) of the official create_section_files.py on ``root``."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "create_section_files.py", "--reports_path", str(root / "files")]
    dt, rss = run(cmd + ["--output_path", str(out), "--no_split"], cwd=official)
    return dt, rss, run.cpu


def warm_up(official: Path | None, out: Path) -> None:
    """Byte-compile both programs' sources and run cxrkit once on 50 reports (writes its tokenizer rules
    file when missing); see the module docstring."""
    import compileall

    from cxrprep.text.chunk_tokenizer import rules_path
    from cxrprep.text.spacy_rules import EXTRA_SPECIAL_CASES

    compileall.compile_dir(str(ROOT / "cxrprep"), quiet=1)
    if official is not None:
        compileall.compile_dir(str(official), quiet=1)
    had = rules_path(EXTRA_SPECIAL_CASES)
    had = had is not None and had.exists()
    run_cxrkit(corpus("synthetic", 50), out, 1)
    print(f"warm-up: sources byte-compiled; tokenizer rules file {'present' if had else 'written'}")


def warm_files(root: Path) -> None:
    """Read every file of the corpus once, so that the first timed run does not pay for a cold page
    cache alone (run 1 always starts with cxrkit)."""
    t = time.perf_counter()
    n = 0
    for dirpath, _, names in os.walk(root / "files"):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                n += len(f.read())
    print(f"page cache: read {n / 2**20:.0f} MiB of reports in {time.perf_counter() - t:.1f} s before timing")


def _spread(xs: list[float]) -> str:
    import statistics

    return f"median {statistics.median(xs):.2f} (min {min(xs):.2f}, max {max(xs):.2f}, {len(xs)} runs)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", choices=("synthetic", "realistic"), default="synthetic")
    ap.add_argument("--n", type=int, default=None, help="reports (default: 200,000 synthetic, 40,000 realistic)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5, help="runs of both programs, alternating which goes first")
    ap.add_argument("--memory", action="store_true", help="also run cxrkit on N/10 reports to compare peak memory")
    a = ap.parse_args()
    n = a.n or (200_000 if a.corpus == "synthetic" else 40_000)
    big = corpus(a.corpus, n)
    st = stats(big)
    print(
        f"corpus {a.corpus}, {n:,} reports: {st['sentences']:,} findings/impression sentences, "
        f"{st['distinct_sentences']:,} distinct (share {st['distinct_share']:.3f}); mean sentences per findings "
        f"{st['findings_mean_sentences']:.2f}, "
        f"per impression {st['impression_mean_sentences']:.2f} (present in {st['findings_present']:.0%} / "
        f"{st['impression_present']:.0%} of reports)"
    )
    out = HERE / "out" / "run"
    official = HERE / "out" / "official"
    have_official = (official / "create_section_files.py").exists()
    if not have_official:
        print(f"official parser not found in {official}; see this script's docstring")
    warm_up(official if have_official else None, out)
    warm_files(big)
    ratios, cpu_ratios, rss_big = [], [], []
    for r in range(a.runs):
        order = ("cxrkit", "official") if r % 2 == 0 else ("official", "cxrkit")
        res = {}
        for who in order:
            if who == "cxrkit":
                res[who] = run_cxrkit(big, out, a.workers)
            elif have_official:
                res[who] = run_official(big, out, official)
        dt, rss, cpu = res["cxrkit"]
        rss_big.append(rss)
        line = f"run {r + 1}: cxrkit {dt:6.1f} s {n / dt:7.0f} reports/s CPU {cpu:6.1f} s RSS {rss / 2**20:5.0f} MiB"
        if have_official:
            odt, orss, ocpu = res["official"]
            ratios.append(odt / dt)
            cpu_ratios.append(ocpu / cpu)
            line += f" | official {odt:6.1f} s {n / odt:7.0f} reports/s CPU {ocpu:6.1f} s | ratio {odt / dt:.2f}x"
        print(line, flush=True)
    if ratios:
        print(f"ratio cxrkit / official throughput ({a.workers} workers vs 1 process): {_spread(ratios)}")
        print(f"CPU time official / cxrkit: {_spread(cpu_ratios)}")
    if a.memory:
        small = corpus(a.corpus, n // 10)
        rss_small = [run_cxrkit(small, out, a.workers)[1] for _ in range(min(a.runs, 3))]
        r1, r2 = max(rss_small), max(rss_big)
        print(f"peak memory {n:,} vs {n // 10:,} reports: {r2 / r1:.2f}x ({r2 / 2**20:.0f} vs {r1 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
