"""Helpers shared by several test files (not part of the installed packages)."""
