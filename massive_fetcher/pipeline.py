"""``massive-fetcher run``: the main job, the whole pipeline on one machine.

It starts the local services (native Kafka and MarketStore), the bundled simulator when no
API key is configured, then the producer and the consumer as child processes of their own,
shows a live status line from their metrics, and on exit stops every child it started (by
pid) and prints the MarketStore buckets that were written.

Each part runs as its own ``massive-fetcher`` subcommand, exactly as it would under
compose or systemd: this module only orchestrates, it holds no pipeline logic.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from common.config import Config, read_sections
from common.files import write_private
from common.metrics import NAMESPACE
from consumer.tornread import read_whole
from massive_fetcher.cli import UsageError, add_config_argument, config_from_args
from services.containers import docker_available
from services.native import NativeServices

SIMULATOR_KEY = "demo-key"  # the simulator accepts any non-empty key


@dataclasses.dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


class Children:
    """The processes this run started; stopped in reverse order, by pid."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.items: list[Child] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "massive_fetcher", *argv],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        child = Child(name, process, log_path)
        self.items.append(child)
        return child

    def check_alive(self) -> None:
        for child in self.items:
            code = child.process.poll()
            if code is not None:
                tail = child.log_path.read_text(errors="replace").splitlines()[-15:]
                raise UsageError(f"{child.name} exited with code {code}; last log lines:\n"
                                 + "\n".join(tail))

    def stop_all(self, timeout: float = 20.0) -> None:
        for child in reversed(self.items):
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
                try:
                    child.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    child.process.kill()
                    child.process.wait(5)


def scrape(port: int, host: str = "127.0.0.1") -> dict[str, float]:
    """Sum every sample of a metrics endpoint by ``name{label=value}`` and by plain name."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            for label, value in sample.labels.items():
                key = f"{sample.name}{{{label}={value}}}"
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


EVENTS = f"{NAMESPACE}_producer_events_total"
WRITTEN = f"{NAMESPACE}_consumer_events_written_total"
LAG = f"{NAMESPACE}_consumer_lag"
DEAD_LETTERS = f"{NAMESPACE}_consumer_dead_letter_total"


class StatusView:
    """Events/s by type from the producer, rows written and lag from the consumer."""

    TYPES = ("bars", "trades", "quotes")

    def __init__(self, config: Config) -> None:
        self.config = config
        self.last: tuple[float, dict[str, float]] | None = None
        self.started = time.monotonic()

    def render(self) -> Table:
        m = self.config.metrics
        producer = scrape(m.producer_port, "127.0.0.1")
        consumer = scrape(m.consumer_port, "127.0.0.1")
        now = time.monotonic()
        rates: dict[str, float] = {}
        if self.last is not None:
            then, before = self.last
            for kind in self.TYPES:
                key = f"{EVENTS}{{type={kind}}}"
                rates[kind] = (producer.get(key, 0.0) - before.get(key, 0.0)) / (now - then)
        self.last = (now, producer)
        table = Table(title=f"massive-fetcher: running {now - self.started:.0f}s "
                            "(Ctrl-C to stop)")
        table.add_column("type")
        table.add_column("received/s", justify="right")
        table.add_column("received", justify="right")
        table.add_column("rows written", justify="right")
        for kind in self.TYPES:
            table.add_row(
                kind,
                f"{rates.get(kind, 0.0):,.0f}",
                f"{producer.get(f'{EVENTS}{{type={kind}}}', 0):,.0f}",
                f"{consumer.get(f'{WRITTEN}{{type={kind}}}', 0):,.0f}")
        lag, dead = consumer.get(LAG, 0), consumer.get(DEAD_LETTERS, 0)
        table.caption = f"consumer lag {lag:,.0f} events; dead-lettered {dead:,.0f}"
        return table


MAX_TABLE_BUCKETS = 60


def bucket_table(url: str, symbols: list[str]) -> Table:
    """Row counts of the buckets of ``symbols`` (all buckets for ``*``, at most 60 shown)."""
    import pymarketstore as pymkts  # pandas under it: `run --help` does without

    client = pymkts.Client(url)
    wanted = None if "*" in symbols else {s.upper().replace("/", ".") for s in symbols}
    tbks = sorted(t for t in client.list_symbols(pymkts.ListSymbolsFormat.TBK)
                  if wanted is None or t.split("/")[0] in wanted)
    table = Table(title="MarketStore buckets")
    table.add_column("bucket")
    table.add_column("rows", justify="right")
    table.add_column("first", justify="right")
    table.add_column("last", justify="right")
    for tbk in tbks[:MAX_TABLE_BUCKETS]:
        symbol, timeframe, group = tbk.split("/")
        try:
            reply = read_whole(functools.partial(client.query,
                                                 pymkts.Params(symbol, timeframe, group)))
            array = next(iter(reply.all().values())).array
        except Exception as exc:  # one unreadable bucket must not hide the others
            table.add_row(tbk, f"error: {exc}", "", "")
            continue
        first = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(array["Epoch"][0])))
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(array["Epoch"][-1])))
        table.add_row(tbk, f"{len(array):,}", first, last)
    if len(tbks) > MAX_TABLE_BUCKETS:
        table.caption = f"... and {len(tbks) - MAX_TABLE_BUCKETS} more buckets"
    return table


def state_dir(config: Config) -> Path:
    base = config.services.state_dir or os.path.join(
        os.environ.get("XDG_STATE_HOME", os.path.expanduser("~/.local/state")),
        "massive-fetcher")
    path = Path(base) / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def effective_config(config: Config, raw_file: str | None, use_simulator: bool,
                     directory: Path) -> Path:
    """The config file handed to every child: the user's, plus the simulator's address.

    It may hold the API key, so only its owner can read it (mode 0600).
    """
    raw: dict = read_sections(raw_file) if raw_file else {}
    if use_simulator:
        sim = config.simulator
        massive = raw.setdefault("massive", {})
        massive["ws_server"] = f"ws://{sim.host}:{sim.port}"
        massive["base_url"] = f"http://{sim.host}:{sim.port}"
        if not massive.get("symbols") or massive.get("symbols") == ["*"]:
            massive["symbols"] = ["AAPL", "MSFT", "AMZN", "SPY"]
        # the demo needs no config at all: everything the simulator streams
        massive.setdefault("data_types", ["bars", "trades", "quotes"])
    producer = raw.setdefault("producer", {})
    producer.setdefault("gaps_file", str(directory / "gaps.jsonl"))
    return write_private(directory / "config.yaml", yaml.safe_dump(raw, sort_keys=False))


def streamed_symbols(config_path: Path) -> list[str]:
    raw = yaml.safe_load(config_path.read_text()) or {}
    return list((raw.get("massive") or {}).get("symbols") or ["*"])


def wait_healthy(port: int, child: Child, children: Children, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children.check_alive()
        with contextlib.suppress(OSError), urllib.request.urlopen(
                f"http://127.0.0.1:{port}/healthz", timeout=1):
            return
        time.sleep(0.3)
    raise UsageError(f"{child.name} did not become healthy within {timeout:.0f}s "
                     f"(log: {child.log_path})")


@contextlib.contextmanager
def local_services(args: argparse.Namespace, config: Config,
                   env: dict[str, str]) -> Iterator[str]:
    """Native Kafka + MarketStore unless the environment already points at servers.

    Points ``env`` (the children's environment) at them and yields the MarketStore URL.
    """
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("MARKETSTORE_URL"):
        yield os.environ["MARKETSTORE_URL"]
        return
    handle = NativeServices(config.services)  # a cluster when `up --brokers 3` made one
    env["KAFKA_BOOTSTRAP_SERVERS"] = handle.kafka_bootstrap
    env["MARKETSTORE_URL"] = handle.marketstore_url
    # Servers the user started before this run are theirs: left running on exit.
    already = {"kafka" if s.name.startswith("kafka") else s.name
               for s in handle.status() if s.running}
    command = [sys.executable, "-m", "massive_fetcher", "services"]
    options = ["--config", args.config] if args.config else []
    if subprocess.run([*command, "up", *options], env=env).returncode != 0:
        raise UsageError("could not start the local services (see the lines above)")
    try:
        yield env["MARKETSTORE_URL"]
    finally:
        started = sorted({"kafka", "marketstore"} - already)
        if started and not args.keep_services:
            subprocess.run([*command, "down", *started, *options], env=env)


def choose_runner(requested: str, java_on_path: bool, docker_reachable: bool) -> str:
    """``native`` or ``compose``: native wherever Java can run Kafka, compose where only a
    Docker engine is available (or when asked for)."""
    if requested != "auto":
        return requested
    if not java_on_path and docker_reachable:
        return "compose"
    return "native"


def compose_argv(compose: Path, env: Mapping[str, str]) -> list[str]:
    """``docker compose up`` of ``compose``: on the simulator (its env file) unless the user
    has a key in the environment or a config of their own for the containers."""
    argv = ["docker", "compose", "-f", str(compose)]
    config_dir = Path(env.get("MASSIVE_FETCHER_CONFIG_DIR") or compose.parent)
    own = env.get("MASSIVE_API_KEY") or any(
        (config_dir / name).exists() for name in ("config.yaml", "mkts.yml"))
    if not own:
        argv += ["--env-file", str(compose.with_name("compose.simulator.env"))]
    return [*argv, "up", "--build"]


def run_compose(config_file: str | None) -> int:
    """The same pipeline under Docker Compose (compose.yaml), in the foreground."""
    compose = Path(__file__).resolve().parent.parent / "compose.yaml"
    if not compose.exists():
        raise UsageError(f"{compose} not found: run from a checkout of massive-fetcher")
    if config_file:
        raise UsageError("--config is not used with compose: the containers read "
                         "config.yaml or mkts.yml from the checkout "
                         "(or $MASSIVE_FETCHER_CONFIG_DIR), and MASSIVE_* from the "
                         "environment")
    return subprocess.call(compose_argv(compose, os.environ))


def run(args: argparse.Namespace) -> int:
    java = shutil.which("java") is not None
    # Ping Docker only when it could change the choice.
    docker = args.runner == "auto" and not java and docker_available()
    if choose_runner(args.runner, java, docker) == "compose":
        return run_compose(args.config)
    config = config_from_args(args)
    console = Console()
    use_simulator = not config.massive.api_key
    if not use_simulator:
        config.require_data_types()
    directory = state_dir(config)
    env = dict(os.environ)
    if use_simulator:
        env["MASSIVE_API_KEY"] = SIMULATOR_KEY
        console.print("[bold]No API key configured: streaming from the bundled Massive "
                      "simulator.[/bold]")
    config_path = effective_config(config, args.config, use_simulator, directory)
    if use_simulator:
        # The children read the simulator's address from the file; env overrides would win.
        env.pop("MASSIVE_WS_SERVER", None)
        env.pop("MASSIVE_BASE_URL", None)
    children = Children(directory)
    with local_services(args, config, env) as marketstore_url:
        stop = {"now": False}

        def on_signal(signum: int, frame: object) -> None:
            stop["now"] = True

        signal.signal(signal.SIGTERM, on_signal)
        try:
            if use_simulator:
                sim = children.start("simulator", [
                    "simulator", "--config", str(config_path)], env)
                wait_healthy(config.simulator.port, sim, children)
            consumer = children.start("consumer", ["consumer", "--config", str(config_path)],
                                      env)
            producer = children.start("producer", ["producer", "--config", str(config_path)],
                                      env)
            wait_healthy(config.metrics.consumer_port, consumer, children)
            wait_healthy(config.metrics.producer_port, producer, children)
            view = StatusView(config)
            deadline = time.monotonic() + args.duration if args.duration else None
            with Live(view.render(), console=console, refresh_per_second=1,
                      transient=False) as live:
                while not stop["now"] and (deadline is None or time.monotonic() < deadline):
                    time.sleep(1.0)
                    children.check_alive()
                    live.update(view.render())
        except KeyboardInterrupt:
            pass
        finally:
            children.stop_all()
        console.print(bucket_table(marketstore_url, streamed_symbols(config_path)))
        console.print(f"Logs of every part: {directory}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "run",
        description="Start native Kafka and MarketStore, the simulator (when no API key is "
                    "set), the producer and the consumer; show live status; on exit print "
                    "the MarketStore buckets written.")
    add_config_argument(parser)
    parser.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                        help="stop by itself after this many seconds (default: run until "
                             "Ctrl-C)")
    parser.add_argument("--runner", choices=("auto", "native", "compose"), default="auto",
                        help="native processes (default wherever Java is installed) or "
                             "docker compose (auto when only a Docker engine is there)")
    parser.add_argument("--keep-services", action="store_true",
                        help="leave Kafka and MarketStore running on exit")
    parser.set_defaults(func=run)
