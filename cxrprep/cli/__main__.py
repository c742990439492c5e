"""`python -m cxrprep.cli ...` runs the cxrprep command line."""

from cxrprep.cli.app import main

main()
