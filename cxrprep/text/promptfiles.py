"""The prompt files that ship with cxrkit, and the resolver behind ``--templates`` / ``--prompts``.

The YAML files live in the repository's top-level ``prompts/`` folder. An installed cxrkit carries them
as the package ``cxrprep.prompt_files`` (pyproject.toml maps that package to ``prompts/``), so a command
finds them from any working directory. In a source checkout run without installing (``PYTHONPATH=.``)
the folder beside the imported ``cxrprep`` package is used.

``resolve_prompt_file(value)``:

* a bare name such as ``default`` or ``eval`` (no ``/``, no ``.yaml``) is a packaged file;
* anything else is a path, which must exist;
* otherwise ValueError naming the value and the packaged names.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "cxrprep.prompt_files"


def packaged_dir() -> Path:
    """The folder holding the packaged prompt YAML files."""
    checkout = Path(__file__).resolve().parents[2] / "prompts"  # cxrprep/text/promptfiles.py -> the checkout
    if (checkout / "default.yaml").is_file() and (checkout / "__init__.py").is_file():
        return checkout  # a source checkout (the package's files live here too when installed editable)
    from importlib import resources

    try:
        return Path(str(resources.files(PACKAGE)))
    except ModuleNotFoundError:  # pragma: no cover - a broken install
        raise ValueError(
            "cxrkit's packaged prompt files are missing (package cxrprep.prompt_files); "
            "reinstall cxrkit, or pass a path"
        ) from None


def packaged_names() -> list[str]:
    """Names accepted as ``--templates NAME`` / ``--prompts NAME`` (e.g. ``default``, ``eval``)."""
    return sorted(p.stem for p in packaged_dir().glob("*.yaml"))


class PromptFile(str):
    """A prompt file option as the user spelled it (``default``, ``prompts/x.yaml``: what configs and manifests
    record) that carries the file it was resolved to once, so no later step resolves it again."""

    path: Path

    def __new__(cls, value: str, path: Path | None = None) -> PromptFile:
        obj = super().__new__(cls, value)
        obj.path = Path(path) if path is not None else Path(value)  # copy/pickle restore the real path after
        return obj


def prompt_file(value: str | Path, option: str = "--templates") -> PromptFile:
    """Resolve ``value`` once (see resolve_prompt_file); the result is still the string the user gave."""
    return value if isinstance(value, PromptFile) else PromptFile(str(value), resolve_prompt_file(value, option))


def resolve_prompt_file(value: str | Path, option: str = "--templates") -> Path:
    """``default`` / ``eval`` (any packaged name) or a path -> an existing file. Raises ValueError."""
    if isinstance(value, PromptFile):
        return value.path
    s = str(value)
    if s and "/" not in s and "\\" not in s and not s.endswith((".yaml", ".yml")):
        names = packaged_names()
        if s in names:
            return packaged_dir() / f"{s}.yaml"
        if not Path(s).is_file():
            raise ValueError(
                f"{option} {s!r}: no packaged prompt file of that name and no such file; packaged "
                f"names: {', '.join(names)} (or give a path to a YAML file)"
            )
    p = Path(s).expanduser()
    if not p.exists():
        raise ValueError(
            f"{option} {s!r}: file does not exist (packaged names: {', '.join(packaged_names())}, "
            f"or give a path to a YAML file)"
        )
    if not p.is_file():
        raise ValueError(f"{option} {s!r} is a folder, not a YAML file")
    return p
