"""`python -m cxrtrain ...` runs the cxrtrain command line (the same as the console script)."""

from cxrprep.cli import signals

signals.early(sigterm=True)  # a Ctrl-C during the imports below: one line, exit 130

from cxrtrain.cli.app import main  # noqa: E402

main()
