"""`python -m cxrtrain.cli ...` runs the cxrtrain command line."""

from cxrtrain.cli.app import main

main()
