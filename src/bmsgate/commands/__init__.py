"""CLI subcommands that live outside ``bmsgate.cli`` (each module has ``add_parsers(subparsers)``)."""
