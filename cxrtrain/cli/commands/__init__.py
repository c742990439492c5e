"""One module per command group; each defines ``register(app)``. cli.py registers them in ORDER."""
