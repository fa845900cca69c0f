"""Schema migrations of the fleet store, one folder per backend (package data, applied by yoyo)."""
