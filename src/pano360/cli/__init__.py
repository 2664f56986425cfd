"""Command-line interface: thin argument parsing over the library (no algorithms here)."""
