"""`python -m cxrtrain ...` runs the cxrtrain command line (the same as the console script)."""

from cxrtrain.cli.app import main

main()
