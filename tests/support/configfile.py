"""The YAML file a CLI under test reads, written from the test's typed Config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from common.config import Config
from common.files import write_private


def config_yaml(config: Config, **sections: Any) -> dict[str, Any]:
    """``config``'s servers, topics, client settings and consumer group as config-file
    sections (metrics off); ``sections`` replace whole sections or add others (massive,
    producer, metrics ports...)."""
    k, c = config.kafka, config.consumer
    return {
        "kafka": {"bootstrap_servers": k.bootstrap_servers, "partitions": k.partitions,
                  "properties": dict(k.properties), "producer": dict(k.producer),
                  "consumer": dict(k.consumer),
                  "topics": {"bars": k.topics.bars, "trades": k.topics.trades,
                             "quotes": k.topics.quotes, "dead_letter": k.topics.dead_letter}},
        "marketstore": {"url": config.marketstore.url},
        "consumer": {"group_id": c.group_id, "batch_max_ms": c.batch_max_ms,
                     "batch_max_events": c.batch_max_events, "commit_delay_ms": c.commit_delay_ms,
                     "retry_initial_s": c.retry_initial_s, "retry_max_s": c.retry_max_s},
        "metrics": {"enabled": False},
        **sections,
    }


def write_config_file(config: Config, path: Path, **sections: Any) -> Path:
    """:func:`config_yaml` in ``path``, readable by its owner only, like ``run``'s own:
    kafka.properties may hold a SASL password."""
    return write_private(path, yaml.safe_dump(config_yaml(config, **sections)))
