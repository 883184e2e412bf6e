"""Backfill: Massive REST history onto the same Kafka topics as the live stream."""
