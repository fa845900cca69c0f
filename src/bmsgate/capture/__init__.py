"""Reverse-engineering support: capture file readers and protocol guessing."""
