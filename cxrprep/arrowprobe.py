"""Keep pyarrow from importing pandas in processes that never use it.

pyarrow asks, on its first ``pa.array`` of a Python list, whether the list is a pandas object, and imports
pandas to answer: about 0.3 s of CPU (measured with ``python -X importtime``) in a ``cxrprep reports`` run
that never sees a pandas object. :func:`skip_pandas_probe` answers that first probe "pandas is not
installed" when pandas is not loaded yet. Later explicit pandas use still works in the same process:
``Table.to_pandas()`` imports pandas then, and ``pa.array(pandas.Series)`` converts as before (both
checked in tests/test_startup.py).
"""

from __future__ import annotations

import sys


class _NoPandas:
    """A finder that says pandas is not installed (``None`` in sys.modules is not enough for pyarrow)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas is not needed by this cxrprep command", name=name)
        return None


def skip_pandas_probe() -> None:
    """Answer pyarrow's pandas probe "not installed" unless pandas is already loaded (then it costs nothing)."""
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    sys.meta_path.insert(0, _NoPandas)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(_NoPandas)
