"""`python -m cxrprep ...` runs the cxrprep command line (the same as the console script)."""

from cxrprep.cli.app import main

main()
