"""``python -m bmsgate`` runs the command line."""

from bmsgate.app.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
