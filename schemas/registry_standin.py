"""An in-process stand-in for the Confluent Schema Registry, for tests and demos only.

Confluent's registry is third-party software that is not available on this machine (its
artifacts are not on Maven Central), so tests run against this stand-in instead. It
implements the subset of the REST API (v1) the project uses, with the real one's status
codes and error codes:

- ``GET/PUT /config`` and ``GET/PUT /config/{subject}`` (``compatibility``; GET answers
  ``compatibilityLevel``; a subject without its own level is 404/40408),
- ``POST /subjects/{subject}/versions`` -> ``{"id": N}``: idempotent for a schema already
  in the subject; the same schema gets the same global id in every subject; a schema
  incompatible with the subject's latest version under BACKWARD/FORWARD/FULL is 409,
- ``GET /subjects``, ``GET /subjects/{subject}/versions``,
  ``GET /subjects/{subject}/versions/{version|latest}``,
- ``GET /schemas/ids/{id}`` (404/40403 when unknown).

The compatibility check covers what Avro schema resolution allows for records: fields added
or removed with defaults, type promotions, unions, enums (a reader enum without a default
must contain the writer's symbols), arrays and maps. Not implemented: transitive levels
(``*_TRANSITIVE`` are checked against the latest version only), references, modes, deletes.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastavro.schema import parse_schema, to_parsing_canonical_form

_PROMOTIONS = {("int", "long"), ("int", "float"), ("int", "double"), ("long", "float"),
               ("long", "double"), ("float", "double"), ("string", "bytes"),
               ("bytes", "string")}
_LEVELS = {"NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
           "FULL", "FULL_TRANSITIVE"}


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return str(schema["type"])
    return str(schema)


def can_read(reader: Any, writer: Any, names: dict[str, Any] | None = None) -> bool:
    """True if data written with ``writer`` resolves to ``reader`` (Avro schema resolution).

    Both schemas are fastavro-parsed (named types expanded on first use, fullnames).
    """
    names = {} if names is None else names
    if isinstance(reader, str) and reader in names:
        reader = names[reader]
    if isinstance(writer, str) and writer in names:
        writer = names[writer]
    if isinstance(writer, list):  # every writer branch must resolve
        return all(can_read(reader, branch, names) for branch in writer)
    if isinstance(reader, list):  # the writer must match some reader branch
        return any(can_read(branch, writer, names) for branch in reader)
    rt, wt = _type_name(reader), _type_name(writer)
    if rt != wt:
        return (wt, rt) in _PROMOTIONS
    if rt == "record":
        names.setdefault(reader["name"], reader)
        written = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            wf = written.get(field["name"])
            if wf is None:
                if "default" not in field:
                    return False
            elif not can_read(field["type"], wf["type"], names):
                return False
        return True
    if rt == "enum":
        names.setdefault(reader["name"], reader)
        return "default" in reader or set(writer["symbols"]) <= set(reader["symbols"])
    if rt == "array":
        return can_read(reader["items"], writer["items"], names)
    if rt == "map":
        return can_read(reader["values"], writer["values"], names)
    if rt == "fixed":
        return bool(reader["size"] == writer["size"])
    return True


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.global_level = "BACKWARD"
        self.levels: dict[str, str] = {}
        self.schemas: dict[int, str] = {}  # id -> text as registered
        self.ids_by_canonical: dict[str, int] = {}
        self.subjects: dict[str, list[int]] = {}  # subject -> schema ids by version
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests


class _Handler(BaseHTTPRequestHandler):
    state: _State
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: int, message: str) -> None:
        self._reply(status, {"error_code": code, "message": message})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self) -> None:
        self._route("GET")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        from urllib.parse import unquote, urlsplit
        path = urlsplit(self.path).path
        st = self.state
        with st.lock:
            st.requests.append((method, path))
            try:
                body = self._body() if method in ("PUT", "POST") else None
            except ValueError:
                return self._error(422, 42203, "invalid JSON body")
            if path == "/config":
                if method == "GET":
                    return self._reply(200, {"compatibilityLevel": st.global_level})
                return self._set_level(None, body)
            if m := re.fullmatch(r"/config/([^/]+)", path):
                subject = unquote(m[1])
                if method == "GET":
                    if subject not in st.levels:
                        return self._error(404, 40408, f"Subject '{subject}' does not have "
                                                       "subject-level compatibility configured")
                    return self._reply(200, {"compatibilityLevel": st.levels[subject]})
                return self._set_level(subject, body)
            if path == "/subjects" and method == "GET":
                return self._reply(200, sorted(st.subjects))
            if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
                subject = unquote(m[1])
                if method == "POST":
                    return self._register(subject, body)
                if subject not in st.subjects:
                    return self._error(404, 40401, f"Subject '{subject}' not found.")
                return self._reply(200, list(range(1, len(st.subjects[subject]) + 1)))
            if (m := re.fullmatch(r"/subjects/([^/]+)/versions/([^/]+)", path)) \
                    and method == "GET":
                subject, version = unquote(m[1]), m[2]
                versions = st.subjects.get(subject)
                if not versions:
                    return self._error(404, 40401, f"Subject '{subject}' not found.")
                index = len(versions) if version == "latest" else int(version)
                if not 1 <= index <= len(versions):
                    return self._error(404, 40402, f"Version {version} not found.")
                sid = versions[index - 1]
                return self._reply(200, {"subject": subject, "version": index, "id": sid,
                                         "schema": st.schemas[sid]})
            if (m := re.fullmatch(r"/schemas/ids/(\d+)", path)) and method == "GET":
                sid = int(m[1])
                if sid not in st.schemas:
                    return self._error(404, 40403, f"Schema {sid} not found")
                return self._reply(200, {"schema": st.schemas[sid]})
            return self._error(404, 404, f"HTTP 404 Not Found: {method} {path}")

    def _set_level(self, subject: str | None, body: Any) -> None:
        level = body.get("compatibility") if isinstance(body, dict) else None
        if level not in _LEVELS:
            return self._error(422, 42203, f"Invalid compatibility level {level!r}")
        if subject is None:
            self.state.global_level = level
        else:
            self.state.levels[subject] = level
        return self._reply(200, {"compatibility": level})

    def _register(self, subject: str, body: Any) -> None:
        st = self.state
        text = body.get("schema") if isinstance(body, dict) else None
        try:
            parsed = parse_schema(json.loads(text), named_schemas={})  # type: ignore[arg-type]
            canonical = to_parsing_canonical_form(parsed)
        except Exception as exc:
            return self._error(422, 42201, f"Invalid schema: {exc}")
        versions = st.subjects.setdefault(subject, [])
        sid = st.ids_by_canonical.get(canonical)
        if sid is not None and sid in versions:
            return self._reply(200, {"id": sid})
        level = st.levels.get(subject, st.global_level)
        if versions and level != "NONE":
            latest = parse_schema(json.loads(st.schemas[versions[-1]]), named_schemas={})
            backward = can_read(parsed, latest)
            forward = can_read(latest, parsed)
            ok = {"BACKWARD": backward, "FORWARD": forward, "FULL": backward and forward}
            if not ok[level.removesuffix("_TRANSITIVE")]:
                return self._error(409, 409, f"Schema being registered is incompatible with "
                                             f"an earlier schema for subject \"{subject}\" "
                                             f"({level})")
        if sid is None:
            sid = len(st.schemas) + 1
            st.schemas[sid] = json.dumps(json.loads(text))  # type: ignore[arg-type]
            st.ids_by_canonical[canonical] = sid
        versions.append(sid)
        return self._reply(200, {"id": sid})


class RegistryStandIn:
    """``with RegistryStandIn() as reg: reg.url`` -- a registry on 127.0.0.1, a free port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = _State()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="registry-standin", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> RegistryStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RegistryStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
