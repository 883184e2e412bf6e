"""The ``massive-fetcher`` command: one entry point with a subcommand per part."""
