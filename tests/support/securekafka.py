"""A real broker with a SASL_SSL (SCRAM over TLS) listener, its certificates made here.

    with SecureKafka(state_dir) as kafka:           # CA + broker cert by openssl, broker up
        kafka.add_user("alice", password)           # SCRAM credentials, admin API
        props = kafka.client_properties("alice", password)   # what kafka.properties holds

The PLAINTEXT listener of ``services.kafka`` stays (controller, probe, adding users); clients
under test only ever get the SASL_SSL address.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from common.config import ServicesConfig
from common.files import PRIVATE_MODE
from common.kafka import silent_logger
from services.kafka import KafkaService, SaslSslListener
from services.paths import cache_root
from services.process import free_port, poll_until

MECHANISM = "SCRAM-SHA-512"
_quiet = silent_logger("tests.securekafka")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A throwaway CA and a broker certificate for 127.0.0.1 signed by it.

    Returns (ca.pem, keystore.pem); the keystore is the broker's key and certificate
    chain in one private file, as Kafka's ``ssl.keystore.type=PEM`` reads it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=massive-fetcher test CA", "-keyout", "ca.key", "-out", "ca.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
             "-keyout", "broker.key", "-out", "broker.csr", cwd=directory)
    (directory / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "broker.ext", "-out", "broker.crt",
             cwd=directory)
    keystore = directory / "broker-keystore.pem"
    parts = [(directory / name).read_text() for name in ("broker.key", "broker.crt", "ca.pem")]
    fd = os.open(keystore, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    with os.fdopen(fd, "w") as out:
        out.write("".join(parts))
    for private in ("ca.key", "broker.key"):
        (directory / private).chmod(PRIVATE_MODE)
    return directory / "ca.pem", keystore


class SecureKafka:
    """One broker+controller with PLAINTEXT and SASL_SSL listeners, by pid."""

    def __init__(self, state_dir: Path, startup_timeout_s: float = 180.0) -> None:
        self.ca, keystore = make_certificates(state_dir / "tls")
        settings = ServicesConfig(kafka_port=free_port(), kafka_controller_port=free_port(),
                                  state_dir=str(state_dir))
        self.service = KafkaService(settings, state_dir, cache_root(settings),
                                    die_with_parent=True,
                                    sasl_ssl=SaslSslListener(free_port(), keystore, MECHANISM))
        self.startup_timeout_s = startup_timeout_s

    @property
    def bootstrap(self) -> str:
        """The SASL_SSL listener: the only address clients under test get."""
        address = self.service.sasl_ssl_address
        assert address is not None
        return address

    def start(self) -> SecureKafka:
        self.service.launch()
        try:
            self.service.wait_ready(self.startup_timeout_s)
        except BaseException:
            self.service.stop()
            raise
        return self

    def stop(self) -> None:
        self.service.stop()

    def __enter__(self) -> SecureKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_user(self, name: str, password: str, timeout_s: float = 60.0) -> None:
        """SCRAM credentials for ``name``; returns once that user can log in over SASL_SSL."""
        admin = AdminClient({"bootstrap.servers": self.service.address, "logger": _quiet})
        upsert = UserScramCredentialUpsertion(
            name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), password.encode())
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(timeout=timeout_s)
        props = {"bootstrap.servers": self.bootstrap, "logger": _quiet,
                 **self.client_properties(name, password)}

        def logs_in() -> bool:
            try:
                AdminClient(props).list_topics(timeout=5)
            except KafkaException:
                return False
            return True

        if not poll_until(logs_in, timeout_s, interval_s=0.5):
            raise RuntimeError(f"user {name} cannot log in over SASL_SSL within {timeout_s}s\n"
                               f"{self.service.log_report()}")

    def client_properties(self, name: str, password: str) -> dict[str, Any]:
        """The librdkafka properties a config's ``kafka.properties`` holds for this user."""
        return {"security.protocol": "SASL_SSL", "sasl.mechanism": MECHANISM,
                "sasl.username": name, "sasl.password": password,
                "ssl.ca.location": str(self.ca)}
