"""The CLI edge of cxrkit, shared by ``cxrprep`` and ``cxrtrain``: the Typer apps, their commands and the
helpers they share (edge: option parsing, error-to-exit-code mapping, progress bars, prompt-file options).
No library module of cxrprep or cxrtrain imports anything from here (tests/test_layout.py checks it)."""
