"""Benchmark: `cxrprep reports --no-images` vs the official MIMIC-CXR section parser, same corpus, same run.

    .venv/bin/python bench/bench_reports.py [--n 200000] [--workers 2]

* Corpus: N synthetic MIMIC-layout reports (examples/synth_reports.py) under bench/out/corpus-N/, plus a
  corpus of N/10 for the memory comparison (peak RSS at N vs N/10).
* Baseline: MIT-LCP/mimic-cxr txt/create_section_files.py + section_parser.py (sections only, one process,
  writes CSVs). Not shipped with cxrkit: put the two files in bench/out/official/ (gitignored), e.g. from a
  clone: git -C mimic-cxr show HEAD:txt/section_parser.py > bench/out/official/section_parser.py (same for
  create_section_files.py). Skipped with a note when absent.
* cxrkit: the full pipeline (read, sections, spaCy sentences, Parquet shards), ``--workers`` processes.
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


def corpus(n: int) -> Path:
    from synth_reports import write_corpus

    root = HERE / "out" / f"corpus-{n}"
    if not (root / ".done").exists():
        shutil.rmtree(root, ignore_errors=True)
        t = time.perf_counter()
        write_corpus(root, n, seed=0)
        (root / ".done").write_text("ok")
        print(f"generated {n:,} reports in {time.perf_counter() - t:.1f} s")
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    py = sys.executable
    big, small = corpus(a.n), corpus(a.n // 10)
    out = HERE / "out" / "run"
    res = {}
    cpu: dict[str, float] = {}
    for name, root in (("small", small), ("big", big)):
        shutil.rmtree(out, ignore_errors=True)
        dt, rss = run(
            [
                py,
                "-m",
                "cxrprep.cli.app",
                "reports",
                str(root),
                "--out",
                str(out),
                "--no-images",
                "--workers",
                str(a.workers),
                "--max-failed",
                "100%",
            ]
        )
        n = a.n if name == "big" else a.n // 10
        res[name] = (n, dt, rss)
        cpu[name] = run.cpu
        print(
            f"cxrkit  {n:>8,} reports: {dt:7.1f} s  {n / dt:8.0f} reports/s  peak RSS {rss / 2**20:7.0f} MiB "
            f"({a.workers} workers)  CPU {run.cpu:6.1f} s"
        )
    official = HERE / "out" / "official"
    if (official / "create_section_files.py").exists():
        shutil.rmtree(out, ignore_errors=True)
        dt, rss = run(
            [
                py,
                "create_section_files.py",
                "--reports_path",
                str(big / "files"),
                "--output_path",
                str(out),
                "--no_split",
            ],
            cwd=official,
        )
        print(
            f"official {a.n:>7,} reports: {dt:7.1f} s  {a.n / dt:8.0f} reports/s  peak RSS {rss / 2**20:7.0f} MiB "
            f"(1 process, sections only)  CPU {run.cpu:6.1f} s"
        )
        n, t, _ = res["big"]
        print(
            f"ratio cxrkit / official throughput: {(n / t) / (a.n / dt):.2f}x; CPU time official / cxrkit: "
            f"{run.cpu / cpu['big']:.2f}x"
        )
    else:
        print(f"official parser not found in {official}; see this script's docstring")
    (n1, _, r1), (n2, _, r2) = res["small"], res["big"]
    print(f"peak memory {n2:,} vs {n1:,} reports: {r2 / r1:.2f}x ({r2 / 2**20:.0f} vs {r1 / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
