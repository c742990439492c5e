"""Load a PyTorch checkpoint without running pickled code.

``safe_load(path)`` reads a ``torch.save`` file (zip or legacy format) through an unpickler that resolves
only an allowlist of globals:

* tensors and their storages (``torch._utils._rebuild_tensor_v2`` and friends, ``torch.*Storage``, dtypes);
* plain containers and scalars (``dict``, ``list``, ``tuple``, ``set``, ``OrderedDict``, ``defaultdict``,
  ``int``, ``float``, ``str``, ...);
* OmegaConf configuration objects, which CXR-CLIP's released ``.tar`` files pickle in their ``config``
  (its trainer converts only ``DictConfig`` to ``dict``; a ``ListConfig`` keeps a link to the whole tree):
  ``DictConfig``, ``ListConfig``, ``ContainerMetadata``, ``Metadata``, the value nodes and ``typing.Any``.
  They are rebuilt as inert stand-ins (OmegaConf need not be installed) and turned into plain dicts, lists
  and values by ``plain()``.

Any other global (a class, a function, ``os.system``, ``builtins.eval``) is refused with
``UnsafeCheckpointError`` naming it; nothing from it runs.
"""

from __future__ import annotations

import _compat_pickle
import collections
import pickle
import types
from pathlib import Path

import torch


class UnsafeCheckpointError(ValueError):
    """The pickle names a global outside the allowlist."""


class CheckpointReadError(ValueError):
    """The file is not a readable torch checkpoint (truncated, corrupt, another format)."""


_BUILTINS = {
    "dict": dict,
    "list": list,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
    "int": int,
    "float": float,
    "complex": complex,
    "str": str,
    "bytes": bytes,
    "bytearray": bytearray,
    "bool": bool,
    "slice": slice,
}
_COLLECTIONS = {"OrderedDict": collections.OrderedDict, "defaultdict": collections.defaultdict}
_TORCH_UTILS = (
    "_rebuild_tensor",
    "_rebuild_tensor_v2",
    "_rebuild_tensor_v3",
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_device_tensor_from_numpy",
)


class OmegaStandIn:
    """An inert stand-in for one pickled OmegaConf object: it only keeps the pickled state."""

    omega_class = ""

    def __init__(self, *args, **kwargs) -> None:
        self.state = None

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.omega_class} stand-in>"


def _stand_in(qualname: str) -> type:
    return type(qualname.rsplit(".", 1)[1], (OmegaStandIn,), {"omega_class": qualname})


#: The OmegaConf classes a CXR-CLIP checkpoint's config may pickle (omegaconf 2.x module paths).
OMEGACONF_ALLOWED = {
    q: _stand_in(q)
    for q in (
        "omegaconf.dictconfig.DictConfig",
        "omegaconf.listconfig.ListConfig",
        "omegaconf.base.ContainerMetadata",
        "omegaconf.base.Metadata",
        "omegaconf.nodes.AnyNode",
        "omegaconf.nodes.StringNode",
        "omegaconf.nodes.IntegerNode",
        "omegaconf.nodes.FloatNode",
        "omegaconf.nodes.BooleanNode",
        "omegaconf.nodes.BytesNode",
        "omegaconf.nodes.PathNode",
    )
}
_TYPING_ANY = types.SimpleNamespace(name="typing.Any")


def _allowed(module: str, name: str):
    if module == "builtins" and name in _BUILTINS:
        return _BUILTINS[name]
    if module == "collections" and name in _COLLECTIONS:
        return _COLLECTIONS[name]
    if module == "torch._utils" and name in _TORCH_UTILS:
        return getattr(torch._utils, name)
    if module == "torch" and (name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)):
        return getattr(torch, name)
    if module == "torch" and name in ("Size", "device"):
        return getattr(torch, name)
    if module == "torch.storage" and name in ("UntypedStorage", "TypedStorage"):
        return getattr(torch.storage, name)
    if module == "torch._tensor" and name == "_rebuild_from_type_v2":
        return torch._tensor._rebuild_from_type_v2
    if module == "torch.nn.parameter" and name == "Parameter":
        return torch.nn.Parameter
    if module == "typing" and name == "Any":
        return _TYPING_ANY
    return OMEGACONF_ALLOWED.get(f"{module}.{name}")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 pickles spell builtins the Python 2 way
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        obj = _allowed(module, name)
        if obj is None:
            raise UnsafeCheckpointError(
                f"refused pickled global {module}.{name}: only tensors, plain containers and OmegaConf "
                f"configs are loaded (nothing else in a checkpoint is run)"
            )
        return obj


_restricted = types.ModuleType("cxrkit_restricted_pickle")
_restricted.Unpickler = _RestrictedUnpickler
_restricted.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
_restricted.__name__ = "cxrkit_restricted_pickle"


def safe_load(path: str | Path):
    """The object a ``torch.save`` file holds, tensors on the CPU; OmegaConf objects become stand-ins
    (see ``plain``). Raises UnsafeCheckpointError or CheckpointReadError, each naming the file."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}") from None
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated zip, bad pickle opcode, foreign format: each its own exception type
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointReadError(
            f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {msg}); it may be truncated "
            f"(an interrupted download) or another format"
        ) from None


def plain(obj):
    """Stand-ins -> plain dicts, lists and values (an OmegaConf config as ``OmegaConf.to_container`` would
    give it, interpolations left as strings); containers recursively; tensors unchanged."""
    if isinstance(obj, OmegaStandIn):
        state = obj.state if isinstance(obj.state, dict) else {}
        kind = obj.omega_class.rsplit(".", 1)[1]
        content = state.get("_content", state.get("_val"))
        if kind == "DictConfig":
            return {k: plain(v) for k, v in content.items()} if isinstance(content, dict) else content
        if kind == "ListConfig":
            return [plain(v) for v in content] if isinstance(content, list) else content
        return plain(state.get("_val"))
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj) if isinstance(obj, list) else tuple(plain(v) for v in obj)
    return obj


__all__ = ["safe_load", "plain", "UnsafeCheckpointError", "CheckpointReadError", "OMEGACONF_ALLOWED"]
