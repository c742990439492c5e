"""`python -m cxrprep ...` runs the cxrprep command line (the same as the console script)."""

from cxrprep.cli import signals

signals.early()  # a Ctrl-C during the imports below: one line, exit 130

from cxrprep.cli.app import main  # noqa: E402

main()
