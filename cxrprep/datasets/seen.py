"""The study ids a long run has seen, to find duplicates, in about 8 bytes per id.

A set of Python ints took about 70 bytes per id (14 MB at 200,000 reports) and was the main part of what
the main process of ``cxrprep reports`` grew by over a run (issue 25: peak memory at 200,000 reports within
1.2x of that at 20,000). Ids that are ASCII digits without a leading zero (all of MIMIC-CXR's) are kept as
int64 in a few sorted numpy arrays, merged like a binary counter (at most log2(n / 16,384) + 1 of them);
the newest ones, and every other id, in sets. "0123" and "123" stay two ids.
"""

from __future__ import annotations

_FLUSH = 16_384  # ids kept in the set of recent ones before they move into a sorted array
_MAX_DIGITS = 18  # int64 holds every 18-digit number


def _key(study_id: str):
    if len(study_id) <= _MAX_DIGITS and study_id.isascii() and study_id.isdigit() and study_id[0] != "0":
        return int(study_id)
    return study_id


class SeenIds:
    """``seen_before(ids)``: for each id in order, whether it came earlier (in an earlier call, or earlier
    in ``ids``); all of them count as seen afterwards."""

    def __init__(self) -> None:
        self.recent: set[int] = set()
        self.other: set[str] = set()
        self.levels: list = []  # sorted, disjoint int64 arrays, each at least as long as the next

    def __len__(self) -> int:
        return len(self.recent) + len(self.other) + sum(len(a) for a in self.levels)

    def seen_before(self, ids: list[str]) -> list[bool]:
        keys = [_key(s) for s in ids]
        old = self._in_levels(keys) if self.levels else None
        recent, other, out = self.recent, self.other, []
        for i, k in enumerate(keys):
            if type(k) is int:
                dup = k in recent or (old is not None and old[i])
                if not dup:
                    recent.add(k)
            else:
                dup = k in other
                if not dup:
                    other.add(k)
            out.append(dup)
        if len(recent) >= _FLUSH:
            self._flush()
        return out

    def _in_levels(self, keys: list) -> list[bool]:
        import numpy as np

        ints = np.fromiter((k if type(k) is int else -1 for k in keys), np.int64, len(keys))  # ids are >= 1
        hit = np.zeros(len(keys), bool)
        for a in self.levels:
            pos = np.minimum(np.searchsorted(a, ints), len(a) - 1)
            hit |= a[pos] == ints
        return hit.tolist()

    def _flush(self) -> None:
        import numpy as np

        levels = self.levels
        levels.append(np.fromiter(sorted(self.recent), np.int64, len(self.recent)))
        self.recent = set()
        while len(levels) > 1 and len(levels[-2]) <= len(levels[-1]):
            b, a = levels.pop(), levels.pop()
            levels.append(np.sort(np.concatenate([a, b])))
