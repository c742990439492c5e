"""Worker pools: results in order, workers die with their parent, a dead pool is a clean error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cxrprep.parallel import WorkerPoolError, ordered_map

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ordered_map_keeps_order():
    assert list(ordered_map(abs, [-3, 2, -1, 0], workers=2)) == [3, 2, 1, 0]
    assert list(ordered_map(abs, [-3, 2], workers=1)) == [3, 2]


def test_ordered_map_start_now_submits_before_returning():
    """start_now: the workers get their first items (max_in_flight, by default 4 per worker) when
    ordered_map returns, before the caller reads anything; results are the same, for no items, fewer items
    than that, and many."""
    seen = []

    def items(n):
        for i in range(n):
            seen.append(i)
            yield -i

    for n in (0, 1, 3, 20):
        seen.clear()
        it = ordered_map(abs, items(n), workers=2, start_now=True)
        assert seen == list(range(min(n, 8)))  # taken (and sent) already
        assert list(it) == list(range(n))
    it = ordered_map(abs, items(9), workers=2, start_now=True)
    it.close()  # the caller gives up (e.g. the output could not be opened): the pool stops
    assert list(ordered_map(abs, items(3), workers=1, start_now=True)) == [0, 1, 2]


@pytest.mark.slow  # subprocesses
def test_workers_die_with_parent_after_kill_9(tmp_path):
    script = textwrap.dedent("""
        import time
        from cxrprep.parallel import ordered_map
        for _ in ordered_map(time.sleep, [120] * 4, workers=2):
            pass
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    kids: set[int] = set()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(kids) < 2:
            time.sleep(0.2)
            kids = _children(parent.pid)
        assert len(kids) >= 2, "the pool did not start"
        time.sleep(0.5)  # let the workers pick up their (120 s) tasks
        kids = _children(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.2)
        left = [k for k in kids if _alive(k)]
        assert not left, f"workers {left} outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for k in kids | _children(parent.pid):  # never leave orphans behind, even when the test fails
            try:
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass


def test_dead_pool_is_a_readable_error():
    with pytest.raises(WorkerPoolError, match="a worker process died"):
        list(ordered_map(os._exit, [3, 3, 3], workers=2))


@pytest.mark.slow  # a subprocess per start method
@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_other_start_methods(method):
    """The parent-death guard must not kill workers whose parent is a fork server (Python 3.14's default)."""
    script = textwrap.dedent(f"""
        import multiprocessing as mp
        if __name__ == "__main__":
            mp.set_start_method("{method}")
            from cxrprep.parallel import ordered_map
            print(list(ordered_map(abs, [-1, -2, 3, -4], workers=2)))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[1, 2, 3, 4]", p.stderr
