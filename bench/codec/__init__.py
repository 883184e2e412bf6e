"""Codec benchmark: ``python -m bench.codec`` (fastavro vs the generated fast path)."""
