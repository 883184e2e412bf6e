"""Topic creation and description against the real Kafka broker (unique topic names)."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from common.config import Config, KafkaConfig, TopicsConfig
from common.kafka import kafka_client_config
from massive_fetcher.cli import main
from schemas.topics import TopicsError, check_topics, describe_topics, ensure_topics

pytestmark = pytest.mark.integration


def make_config(bootstrap: str, **kafka: object) -> Config:
    prefix = f"test-schemas-{uuid.uuid4().hex[:10]}"
    topics = TopicsConfig(bars=f"{prefix}.bars", trades=f"{prefix}.trades",
                          quotes=f"{prefix}.quotes", dead_letter=f"{prefix}.dlq")
    return Config(kafka=KafkaConfig(bootstrap_servers=bootstrap, topics=topics,
                                    **kafka))  # type: ignore[arg-type]


def delete(config: Config) -> None:
    admin = AdminClient(kafka_client_config(config, "admin"))
    t = config.kafka.topics
    for future in admin.delete_topics([t.bars, t.trades, t.quotes, t.dead_letter]).values():
        with contextlib.suppress(Exception):  # already gone or never created
            future.result(timeout=15)


def test_ensure_topics_creates_missing_ones_once(kafka_bootstrap: str) -> None:
    config = make_config(kafka_bootstrap, partitions=3, compression="zstd")
    try:
        before = describe_topics(config)
        assert [i.exists for i in before] == [False] * 4
        assert len(check_topics(config, infos=before)) == 4
        created = ensure_topics(config)
        t = config.kafka.topics
        assert sorted(created) == sorted([t.bars, t.trades, t.quotes, t.dead_letter])
        assert ensure_topics(config) == []  # idempotent
        infos = describe_topics(config)
        assert [i.role for i in infos] == ["bars", "trades", "quotes", "dead_letter"]
        for info in infos:
            assert info.exists and info.partitions == 3 and info.replication_factor == 1
            # one broker: one replica, and the broker's min.insync.replicas of 1
            assert info.configs == {"retention.ms": "-1", "retention.bytes": "-1",
                                    "compression.type": "zstd", "min.insync.replicas": "1"}
        assert check_topics(config) == []
        # a config that asks for more partitions / another codec is reported, not applied
        other = config.replace(kafka=KafkaConfig(
            bootstrap_servers=kafka_bootstrap, topics=config.kafka.topics, partitions=6))
        problems = check_topics(other)
        assert any("3 partitions" in p for p in problems)
        assert any("compression.type=zstd, expected lz4" in p for p in problems)
    finally:
        delete(config)


def test_ensure_creates_only_what_is_missing(kafka_bootstrap: str) -> None:
    config = make_config(kafka_bootstrap, partitions=2, compression="none")
    try:
        only_trades = config.replace(kafka=KafkaConfig(
            bootstrap_servers=kafka_bootstrap, partitions=1,
            topics=TopicsConfig(bars=config.kafka.topics.trades,
                                trades=config.kafka.topics.trades,
                                quotes=config.kafka.topics.trades,
                                dead_letter=config.kafka.topics.trades)))
        assert ensure_topics(only_trades) == [config.kafka.topics.trades]
        created = ensure_topics(config)
        assert config.kafka.topics.trades not in created and len(created) == 3
        by_role = {i.role: i for i in describe_topics(config)}
        assert by_role["trades"].partitions == 1 and by_role["bars"].partitions == 2
        assert by_role["bars"].configs["compression.type"] == "uncompressed"
    finally:
        delete(config)


def test_unreachable_broker_is_a_clear_error() -> None:
    config = make_config("127.0.0.1:1")
    with pytest.raises(TopicsError, match="did not answer"):
        ensure_topics(config, timeout_s=1.0)


def test_cli_create_and_describe(kafka_bootstrap: str, tmp_path: pytest.TempPathFactory,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config(kafka_bootstrap)
    t = config.kafka.topics
    path = tmp_path / "config.yaml"  # type: ignore[operator]
    path.write_text(f"kafka:\n  bootstrap_servers: {kafka_bootstrap}\n  partitions: 2\n"
                    f"  topics:\n    bars: {t.bars}\n    trades: {t.trades}\n"
                    f"    quotes: {t.quotes}\n    dead_letter: {t.dead_letter}\n")
    try:
        assert main(["topics", "--config", str(path)]) == 1
        out = capsys.readouterr().out.splitlines()
        assert f"{t.bars} (bars): missing" in out
        assert main(["topics", "create", "--config", str(path)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 4 and all(line.startswith("created ") for line in out)
        assert main(["topics", "describe", "--config", str(path)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[1] == (f"{t.trades} (trades): partitions=2 replication=1 retention.ms=-1 "
                          "retention.bytes=-1 compression.type=lz4 min.insync.replicas=1")
        assert len(out) == 4
    finally:
        delete(config)


def test_kafka_client_config_layers_properties() -> None:
    base = Config()
    config = base.replace(kafka=KafkaConfig(
        bootstrap_servers="b:1", properties={"client.rack": "r1", "acks": "1"},
        producer={"acks": "all"}, consumer={"fetch.min.bytes": 10}))
    assert kafka_client_config(config, "producer") == {
        "bootstrap.servers": "b:1", "client.rack": "r1", "acks": "all"}
    assert kafka_client_config(config, "consumer") == {
        "bootstrap.servers": "b:1", "client.rack": "r1", "acks": "1", "fetch.min.bytes": 10}
    assert kafka_client_config(config, "admin") == {
        "bootstrap.servers": "b:1", "client.rack": "r1", "acks": "1"}
    with pytest.raises(ValueError):
        kafka_client_config(config, "streams")  # type: ignore[arg-type]


def test_group_offsets_are_asked_again_only_while_the_coordinator_is_not_ready() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from common.kafka import worth_asking_again

    def failed(code: int, **flags: bool) -> KafkaException:
        return KafkaException(KafkaError(code, **flags))

    for code in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                 KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT):
        assert worth_asking_again(failed(code))
    assert worth_asking_again(failed(KafkaError.UNKNOWN, retriable=True))
    for code in (KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.UNKNOWN_TOPIC_OR_PART):
        assert not worth_asking_again(failed(code))
    assert not worth_asking_again(KafkaException("no KafkaError inside"))


def test_the_kafka_error_inside_an_exception_is_read_in_one_place() -> None:
    from confluent_kafka import KafkaError, KafkaException

    from common.kafka import (
        kafka_error_code,
        kafka_error_of,
        kafka_error_text,
        refused_as_too_large,
    )

    inner = KafkaError(KafkaError.TOPIC_ALREADY_EXISTS, "topic 'x' already exists")
    exc = KafkaException(inner)
    assert kafka_error_of(exc) is inner
    assert kafka_error_code(exc) == KafkaError.TOPIC_ALREADY_EXISTS
    assert kafka_error_text(exc) == "topic 'x' already exists"
    assert not refused_as_too_large(exc)
    assert refused_as_too_large(KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)))
    for bare in (KafkaException("no KafkaError inside"), KafkaException()):
        assert kafka_error_of(bare) is None
        assert kafka_error_code(bare) is None
        assert not refused_as_too_large(bare)
    assert kafka_error_text(KafkaException("no KafkaError inside")) == "no KafkaError inside"


def test_a_broker_that_has_not_applied_a_new_topic_yet_is_asked_again() -> None:
    """describe_configs goes to any broker; one behind on the metadata log answers "unknown
    topic" for a moment after the creation (seen on the 3-broker cluster)."""
    from concurrent.futures import Future

    from confluent_kafka import KafkaError, KafkaException

    from schemas.topics import managed_configs

    class Entry:
        def __init__(self, value: str) -> None:
            self.value = value

    class Admin:  # answers "unknown" for t.a `unknown` times, then its configs
        def __init__(self, unknown: int, code: int = KafkaError.UNKNOWN_TOPIC_OR_PART) -> None:
            self.unknown, self.code, self.asked = unknown, code, []

        def describe_configs(self, resources: list, request_timeout: float) -> dict:
            out = {}
            for r in resources:
                self.asked.append(r.name)
                f: Future = Future()
                if r.name == "t.a" and self.unknown:
                    self.unknown -= 1
                    f.set_exception(KafkaException(KafkaError(self.code)))
                else:
                    f.set_result({"min.insync.replicas": Entry("2"), "other": Entry("x")})
                out[r] = f
            return out

    admin = Admin(unknown=2)
    got = managed_configs(admin, ["t.a", "t.b"], timeout_s=5)  # type: ignore[arg-type]
    assert got == {"t.a": {"min.insync.replicas": "2"}, "t.b": {"min.insync.replicas": "2"}}
    assert admin.asked == ["t.a", "t.b", "t.a", "t.a"]
    with pytest.raises(TopicsError, match=r"cannot describe topic t\.a"):  # past the deadline
        managed_configs(Admin(unknown=10**6), ["t.a"], timeout_s=0.3)  # type: ignore[arg-type]
    with pytest.raises(TopicsError, match=r"cannot describe topic t\.a"):  # other errors: at once
        managed_configs(Admin(unknown=1, code=KafkaError.TOPIC_AUTHORIZATION_FAILED),
                        ["t.a"], timeout_s=5)  # type: ignore[arg-type]
