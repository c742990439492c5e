"""Input paths stay inside ``--image-root``.

A CSV row such as ``../../etc/passwd``, ``/etc/shadow`` or a symlink that points out of the image folder
would otherwise be read and written into a shard. ``outside_root`` resolves the path and the root
(``os.path.realpath``: every symlink followed, ``..`` collapsed) and names the problem; the commands
turn that into a reject (stage ``path``) unless the user passes ``--allow-outside-root``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, TypeVar

T = TypeVar("T", bound=tuple)

ALLOW_OPTION = "--allow-outside-root"


def real(path: str | Path) -> Path:
    """The resolved path (symlinks followed; a loop or a missing part is left as written)."""
    return Path(os.path.realpath(os.fspath(path)))


def outside_root(path: str | Path, root: str | Path, root_real: Path | None = None) -> str | None:
    """None when ``path`` resolves inside ``root`` (or is the root), else the reject reason."""
    try:
        target = real(path)
        base = root_real or real(root)
    except (OSError, ValueError, RuntimeError) as e:  # embedded NUL, over-long names, ...
        return f"{path}: cannot resolve the path ({type(e).__name__}: {e})"
    if target == base or base in target.parents:
        return None
    return f"{path}: outside --image-root {root} (resolves to {target}); pass {ALLOW_OPTION} to read files outside it"


def split_outside(items: Sequence[T], root: str | Path, allow: bool = False) -> tuple[list[T], list[tuple[str, str]]]:
    """Items whose first element is a path -> (items inside ``root``, [(path, reason)] for the others).
    ``allow`` (``--allow-outside-root``) keeps every item."""
    if allow:
        return list(items), []
    base = real(root)
    keep, rejected = [], []
    for it in items:
        reason = outside_root(it[0], root, base)
        if reason is None:
            keep.append(it)
        else:
            rejected.append((str(it[0]), reason))
    return keep, rejected


__all__ = ["ALLOW_OPTION", "outside_root", "real", "split_outside"]
