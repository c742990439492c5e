"""Quiet third-party output, set once when a cxrprep/cxrtrain command starts.

* transformers' own progress bars ("Loading weights ...") never show; the hub's download bars show only on a
  terminal;
* third-party warnings that say nothing to a cxrkit user (transformers' advice to install sacremoses,
  setuptools/pkg_resources deprecations, ...) are silenced; off a terminal (logs, CI) transformers and the
  hub log errors only;
* the Hugging Face hub fails fast when it cannot be reached (``offline_advice`` words the message).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

NOISY = [  # (message regex, module regex) of warnings a cxrkit user cannot act on
    (r".*sacremoses.*", ""),
    (r".*pkg_resources is deprecated.*", ""),
    (r".*setuptools.*", ""),
    (r".*`resume_download` is deprecated.*", ""),
    (r".*TypedStorage is deprecated.*", ""),
]


def quiet_third_party(tty: bool | None = None) -> None:
    """Call once at command start, before transformers / huggingface_hub are imported (they read these
    environment variables at import; a value the user set is kept)."""
    if tty is None:
        tty = sys.stderr.isatty()
    for msg, mod in NOISY:
        warnings.filterwarnings("ignore", message=msg, module=mod)
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if not tty:
        # transformers' own bars ("Loading weights") follow the hub's switch
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # an unreachable hub: one short try instead of ~30 s of retries (a user's own values are kept)
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    for name in ("transformers", "transformers.models.marian.tokenization_marian"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, _SacremosesFilter) for f in lg.filters):
            lg.addFilter(_SacremosesFilter())


class _SacremosesFilter(logging.Filter):
    """transformers' Marian tokenizer logs 'Recommended: pip install sacremoses.' as a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "sacremoses" not in record.getMessage()


def hub_unreachable_advice(name: str) -> str:
    """Advice when ``name`` could not be fetched from the hub, fitting this environment."""
    offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True", "YES", "yes")
    base = f"cannot load {name!r}: "
    if offline:
        return base + (
            "HF_HUB_OFFLINE=1 and it is not in the local cache; download it on a machine with "
            "network (huggingface-cli download NAME) and copy ~/.cache/huggingface, or pass a local "
            "folder (--set model.image_encoder=DIR / model.text_encoder=DIR)"
        )
    return base + (
        "the Hugging Face hub could not be reached; on a machine without network set HF_HUB_OFFLINE=1 "
        "and use a local copy (--set model.image_encoder=DIR / model.text_encoder=DIR), or check "
        "HTTPS_PROXY / HF_ENDPOINT"
    )
