"""Shared plumbing for every part: configuration, logging, metrics."""
