"""Schema-specialised Avro encoders/decoders (placeholder: the fastavro path is used)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def compile_encoder(schema: Mapping[str, Any]) -> Callable[[dict[str, Any]], bytes] | None:
    return None


def compile_decoder(
        schema: Mapping[str, Any]) -> Callable[[bytes, int], tuple[dict[str, Any], int]] | None:
    return None
