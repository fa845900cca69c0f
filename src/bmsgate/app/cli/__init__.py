"""The ``bmsgate`` command line: one module per command group; ``main`` parses and dispatches."""
