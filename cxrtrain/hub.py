"""Fail fast when the Hugging Face hub cannot be reached.

Without ``HF_HUB_OFFLINE``, transformers retries an unreachable hub with back-off for about 30-50 s per
file before it gives up. ``hub_preflight`` checks once (a 3 s TCP connect to ``HF_ENDPOINT``) before any
model is built: when the hub is unreachable, models already in the local cache are used offline, and
anything else fails at once with advice that fits this machine.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

_TRUE = ("1", "true", "yes", "on")
_PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


class HubUnreachable(RuntimeError):
    """The hub cannot be reached and a model is not in the local cache (exit 1)."""


def hub_names(names) -> list[str]:
    """The names that ``from_pretrained`` would fetch from the hub (not local folders, not built-in configs)."""
    return [
        n
        for n in names
        if n and "/" in n and not n.startswith(("config:", "torchvision/", ".", "/", "~")) and not Path(n).exists()
    ]


def _offline() -> bool:
    return (
        os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE
        or os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in _TRUE
    )


def _reachable(endpoint: str, timeout: float) -> str | None:
    """None if a TCP connection to the endpoint opens, else the reason."""
    u = urlparse(endpoint)
    try:
        socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=timeout).close()
        return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def _cached(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:
        return False


def go_offline() -> None:
    """Switch this process to the local cache (transformers and huggingface_hub read this constant)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as c

        c.HF_HUB_OFFLINE = True
    except Exception:  # pragma: no cover
        pass


def hub_preflight(names, log=print, timeout: float = 3.0) -> None:
    """Before building models named ``names``: nothing to do offline, through a proxy, or for local
    models; otherwise one quick connection check. Raises HubUnreachable with advice."""
    repos = hub_names(names)
    if not repos or _offline() or any(os.environ.get(k) for k in _PROXIES):
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    why = _reachable(endpoint, timeout)
    if why is None:
        return
    missing = [r for r in repos if not _cached(r)]
    if not missing:
        go_offline()
        log(
            f"the Hugging Face hub ({endpoint}) cannot be reached ({why}); using the cached copies of "
            f"{', '.join(repos)} (set HF_HUB_OFFLINE=1 to skip this check)"
        )
        return
    raise HubUnreachable(
        f"the Hugging Face hub ({endpoint}) cannot be reached ({why}) and {', '.join(missing)} is not in the "
        f"local cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}). On a machine without network: "
        f"download it where there is network (huggingface-cli download {missing[0]}), copy the cache folder "
        f"here and set HF_HUB_OFFLINE=1, or point at a local folder with --set model.image_encoder=DIR / "
        f"--set model.text_encoder=DIR. Behind a proxy: set HTTPS_PROXY. Or use --set model.preset=tiny, which "
        f"needs no download."
    )
