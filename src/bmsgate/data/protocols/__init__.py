"""Built-in protocol definitions (YAML package data)."""
