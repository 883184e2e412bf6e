"""Local Apache Kafka and MarketStore without Docker: ``massive-fetcher services up|status|down``.

``services.native.NativeServices`` is the Python API (the CLI and the test fixtures use it);
``services.containers.ContainerServices`` offers the same handle over testcontainers.
"""
