"""Producer benchmark: ``python -m bench.producer`` (see __main__)."""
