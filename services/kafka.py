"""Apache Kafka as a single-node KRaft broker+controller, from Maven Central jars."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from common.config import ServicesConfig
from services import process
from services.base import HOST, Service, ServiceError, which
from services.probes import kafka_answers

# pom.xml and log4j2.properties ship next to this module (package data).
PACKAGE_DIR = Path(__file__).resolve().parent
HEAP = re.compile(r"^\d+[kKmMgG]?$")


def kafka_cluster_id() -> str:
    """What ``StorageTool random-uuid`` prints, without paying for a JVM start.

    Kafka's Uuid is 16 random bytes in URL-safe base64 without padding; it never hands out
    one whose text starts with '-' (it would read as a command-line option).
    """
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


@dataclass(frozen=True)
class SaslSslListener:
    """A second client listener that takes SASL/SCRAM over TLS only.

    ``keystore`` is a PEM file holding the broker's unencrypted PKCS#8 private key followed
    by its certificate chain (Kafka's ``ssl.keystore.type=PEM``); keep it private (0600).
    SCRAM users are credentials in the cluster metadata, added through the admin API
    (``alter_user_scram_credentials``) on the PLAINTEXT listener, which stays for the
    controller, inter-broker traffic and the readiness probe.
    """

    port: int
    keystore: Path
    mechanism: str = "SCRAM-SHA-512"


def server_properties(port: int, controller_port: int, data_dir: Path,
                      sasl_ssl: SaslSslListener | None = None) -> str:
    """A single node that is broker and controller at once, reachable on 127.0.0.1 only."""
    listeners = f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}"
    advertised = f"PLAINTEXT://{HOST}:{port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if sasl_ssl is not None:
        listeners += f",SASL_SSL://{HOST}:{sasl_ssl.port}"
        advertised += f",SASL_SSL://{HOST}:{sasl_ssl.port}"
        protocols += ",SASL_SSL:SASL_SSL"
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": protocols,
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        # One node: every internal topic must settle for one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests and a freshly scaled consumer group should not wait 3 s for a rebalance.
        "group.initial.rebalance.delay.ms": "0",
    }
    if sasl_ssl is not None:
        mechanism = sasl_ssl.mechanism.lower()
        lines |= {
            "sasl.enabled.mechanisms": sasl_ssl.mechanism,
            f"listener.name.sasl_ssl.{mechanism}.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
            "listener.name.sasl_ssl.ssl.keystore.location": str(sasl_ssl.keystore),
        }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


class KafkaService(Service):
    name = "kafka"
    stop_grace_s = 30.0  # a controlled shutdown flushes and closes every partition

    def __init__(self, settings: ServicesConfig, state_dir: Path, cache_dir: Path,
                 die_with_parent: bool = False,
                 sasl_ssl: SaslSslListener | None = None) -> None:
        super().__init__(state_dir, cache_dir, die_with_parent)
        self.sasl_ssl = sasl_ssl
        if not HEAP.match(settings.kafka_heap):
            raise ServiceError(f"services.kafka_heap: {settings.kafka_heap!r} is not a JVM "
                               "heap size such as 512m or 1g")
        self.settings = settings
        self.dist = cache_dir / f"kafka-{settings.kafka_version}"
        self.libs = self.dist / "libs"
        self.properties = self.home / "server.properties"
        self.log4j_config = self.home / "log4j2.properties"
        self.data_dir = self.home / "data"
        self.logs_dir = self.home / "logs"
        self.cluster_id_file = self.home / "cluster.id"

    @property
    def marker(self) -> str:
        return str(self.properties)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.settings.kafka_port}"

    @property
    def sasl_ssl_address(self) -> str | None:
        return None if self.sasl_ssl is None else f"{HOST}:{self.sasl_ssl.port}"

    def ports(self) -> list[int]:
        extra = [] if self.sasl_ssl is None else [self.sasl_ssl.port]
        return [self.settings.kafka_port, self.settings.kafka_controller_port, *extra]

    def log_files(self) -> list[Path]:
        return [self.log_file, self.logs_dir / "server.log"]

    def libs_ready(self) -> bool:
        return (self.dist / ".complete").exists() and self.libs.is_dir()

    def missing_tools(self) -> list[str]:
        missing = [] if which("java") else ["java"]
        if not self.libs_ready() and not which("mvn"):
            missing.append("mvn")
        return missing

    # --- preparation ---------------------------------------------------------------------
    def resolve_jars(self) -> None:
        """Copy Kafka and its runtime dependencies from Maven into the cache, once."""
        if self.libs_ready():
            return
        self.dist.mkdir(parents=True, exist_ok=True)
        with process.file_lock(self.dist / ".lock"):
            if self.libs_ready():
                return
            pom = self.dist / "pom.xml"
            pom.write_bytes((PACKAGE_DIR / "pom.xml").read_bytes())
            partial = self.dist / "libs.partial"
            shutil.rmtree(partial, ignore_errors=True)
            log = self.dist / "mvn.log"
            argv = [which("mvn") or "mvn", "-B", "-q", "-f", str(pom),
                    f"-Dkafka.version={self.settings.kafka_version}",
                    "dependency:copy-dependencies", "-DincludeScope=runtime",
                    f"-DoutputDirectory={partial}"]
            with open(log, "wb") as out:
                done = subprocess.run(argv, cwd=self.dist, stdout=out,
                                      stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
                raise ServiceError(
                    f"kafka: Maven could not resolve Kafka {self.settings.kafka_version} "
                    f"(exit {done.returncode}); see {log}:\n{process.tail(log, 20)}")
            shutil.rmtree(self.libs, ignore_errors=True)
            partial.rename(self.libs)
            (self.dist / ".complete").write_text(f"{self.settings.kafka_version}\n")

    def java_options(self) -> list[str]:
        return [
            f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp", f"{self.libs}/*",  # java expands the wildcard itself
        ]

    def format_storage(self) -> None:
        """Format the log dir on first start; the cluster id stays in the state dir."""
        if (self.data_dir / "meta.properties").exists():
            return
        if self.cluster_id_file.exists():
            cluster_id = self.cluster_id_file.read_text().strip()
        else:
            cluster_id = kafka_cluster_id()
            self.cluster_id_file.write_text(cluster_id + "\n")
        # Without --standalone: it conflicts with a static controller.quorum.voters.
        argv = [which("java") or "java", *self.java_options(), "kafka.tools.StorageTool",
                "format", "-t", cluster_id, "-c", str(self.properties)]
        with open(self.log_file, "ab") as out:
            done = subprocess.run(argv, cwd=self.home, stdout=out, stderr=subprocess.STDOUT,
                                  check=False)
        if done.returncode != 0:
            raise ServiceError(f"kafka: formatting {self.data_dir} failed "
                               f"(exit {done.returncode})\n{self.log_report(20)}")

    def prepare(self) -> None:
        self.resolve_jars()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.log4j_config.write_bytes((PACKAGE_DIR / "log4j2.properties").read_bytes())
        self.properties.write_text(server_properties(
            self.settings.kafka_port, self.settings.kafka_controller_port, self.data_dir,
            self.sasl_ssl))
        self.format_storage()

    def argv(self) -> list[str]:
        return [which("java") or "java", *self.java_options(), "kafka.Kafka",
                str(self.properties)]

    def answers(self) -> bool:
        return kafka_answers(self.address)
