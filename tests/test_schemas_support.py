"""The random records of tests/support/samples.py are valid for their schemas."""

from __future__ import annotations

import random

from schemas.codec import KINDS, load_schema
from tests.support.samples import random_record


def test_random_records_are_valid_for_fastavro() -> None:
    import fastavro.validation
    rng = random.Random(1)
    for kind in KINDS:
        schema = load_schema(kind)
        for _ in range(50):
            assert fastavro.validation.validate(random_record(rng, kind), schema)
