"""A kind's specification -> the function that maps one source's object to a record.

Each (kind, source) compiles once into one straight-line Python function (generated
source, like :mod:`schemas.fastpath`): one ``get`` per key, the common case tested with a
``__class__`` comparison, everything else through the small helpers below, and the record
built in one dict display in schema field order. The rules are those of
:mod:`schemas.spec`; this module is their only implementation for the Python tier.

WebSocket (``compile_ws``): ``f(event, received_ns) -> record``; values are type-checked
(``type(x) is int`` style: cheapest correct test, and ``True`` is not an integer), a bad
event raises ``error`` with one line naming the field.

REST (``compile_rest``): ``f(result, symbol, timeframe) -> record``; values are converted
(``int()``, ``float()``...), a missing required key, a null one or a failed conversion
raises ``error`` with one line naming the kind and the symbol.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from schemas.spec import FieldSpec, KindSpec, Origin, SpecError

Record = dict[str, Any]
WsMapper = Callable[[dict[str, Any], int | None], Record]
RestMapper = Callable[[Mapping[str, Any], str, str | None], Record]
ErrorType = type[Exception]

_INTS = ("long", "int")
_FLOATS = ("double", "float")
_EXPECTED = {"long": "an integer", "int": "an integer", "double": "a number",
             "float": "a number", "string": "a non-empty string", "boolean": "a boolean",
             "array": "a list of integers"}


class FunctionSource:
    """One function's source lines and the objects it reads (bound as default arguments)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}

    def const(self, value: Any) -> str:
        """An expression for ``value``: a literal, or a bound name for what has none."""
        if value is None or isinstance(value, bool | int | str):
            return repr(value)
        if isinstance(value, float) and math.isfinite(value):
            return repr(value)
        if isinstance(value, list) and all(type(v) is int for v in value):
            return repr(value)  # a literal: a fresh list per record
        for name, bound in self.consts.items():
            if bound is value:
                return name
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def compile(self, signature: str, helpers: Mapping[str, Any], name: str) -> Any:
        bound = {**helpers, **self.consts}
        args = "".join(f", {n}={n}" for n in bound)
        source = "\n".join([f"def {name}({signature}{args}):", *self.lines])
        namespace: dict[str, Any] = dict(bound)
        exec(source, namespace)  # source generated from the .avsc annotations only
        fn = namespace[name]
        fn.__source__ = source
        return fn


# ------------------------------------------------------------------------------- WebSocket
def _ws_helpers(error: ErrorType) -> dict[str, Any]:
    def ill_typed(ev: dict[str, Any], key: str, expected: str) -> Exception:
        value = repr(ev.get(key))
        if len(value) > 40:
            value = value[:40] + "..."
        return error(f"{ev.get('ev')!r} event: field {key!r} must be {expected}, got {value}")

    def bad(ev: dict[str, Any], key: str, expected: str) -> Exception:
        """The error for a required key: missing, or present with the wrong type."""
        if key not in ev:
            return error(f"{ev.get('ev')!r} event: missing field {key!r}")
        return ill_typed(ev, key, expected)

    def decimal(ev: dict[str, Any], key: str) -> float:
        """A decimal string (``ds``, ``dv``), or leniently a number where one was expected."""
        v = ev[key]
        if type(v) is str:
            try:
                f = float(v)
            except ValueError:
                raise ill_typed(ev, key, "a decimal string") from None
            if not math.isfinite(f):
                raise ill_typed(ev, key, "a finite decimal string")
            return f
        if type(v) is int or type(v) is float:
            return float(v)
        raise ill_typed(ev, key, "a decimal string")

    def int_list(ev: dict[str, Any], key: str, v: Any) -> list[int]:
        if type(v) is list:
            for item in v:
                if type(item) is not int:
                    break
            else:
                return v
        raise ill_typed(ev, key, "a list of integers")

    return {"_ill": ill_typed, "_bad": bad, "_decimal": decimal, "_int_list": int_list}


def _ws_read(src: FunctionSource, f: FieldSpec, key: str, v: str, required: bool, absent: str,
             depth: int = 1) -> None:
    """Statements leaving ``f``'s value from ``key`` in ``v`` (``absent`` when null)."""
    expected = _EXPECTED.get(f.base)
    if expected is None:
        raise SpecError(f"{f.name}: a WebSocket value of type {f.base} is not supported")
    fails = {"string": f"{v}.__class__ is not str or not {v}",
             "boolean": f"{v}.__class__ is not bool", "array": f"{v}.__class__ is not list"}.get(
        f.base, f"{v}.__class__ is not {'float' if f.base in _FLOATS else 'int'}")
    branches = []  # what else is accepted when the common type test fails
    if not required:
        branches.append((f"{v} is None", "pass" if absent == "None" else f"{v} = {absent}"))
    if f.base in _FLOATS:
        branches.append((f"{v}.__class__ is int", f"{v} = float({v})"))
    fail = (f"raise _bad(ev, {key!r}, {expected!r})" if required
            else f"raise _ill(ev, {key!r}, {expected!r})")
    src.add(depth, f"{v} = g({key!r})")
    src.add(depth, f"if {fails}:")
    word = "if"
    for condition, statement in branches:
        src.add(depth + 1, f"{word} {condition}:")
        src.add(depth + 2, statement)
        word = "elif"
    if branches:
        src.add(depth + 1, "else:")
        src.add(depth + 2, fail)
    else:
        src.add(depth + 1, fail)
    if f.base == "array":  # checked inline: a function call would cost more than the loop
        src.add(depth, "else:")
        src.add(depth + 1, f"for x in {v}:")
        src.add(depth + 2, "if x.__class__ is not int:")
        src.add(depth + 3, f"raise _ill(ev, {key!r}, {expected!r})")


def _ws_field(src: FunctionSource, f: FieldSpec, o: Origin, v: str) -> str:
    """Statements for one field; returns the expression of its value."""
    absent = src.const(o.absent)
    if o.rule == "constant":
        return src.const(o.value)
    if o.rule == "received":
        return "received_ns"
    if o.rule in ("required", "optional"):
        if o.scale == 1:
            _ws_read(src, f, o.keys[0], v, o.rule == "required", absent)
            return v
        _ws_read(src, f, o.keys[0], v, o.rule == "required", "None")
        if o.rule == "required":
            return f"{v} * {o.scale}"
        return f"{absent} if {v} is None else {v} * {o.scale}"  # absent is not scaled
    if o.rule == "decimal":
        src.add(1, f"if g({o.keys[0]!r}) is not None:")
        src.add(2, f"{v} = _decimal(ev, {o.keys[0]!r})")
        src.add(1, "else:")
        if len(o.keys) > 1:
            _ws_read(src, f, o.keys[1], v, not f.nullable, absent, depth=2)
        else:
            src.add(2, f"{v} = {absent}")
        return v
    if o.rule == "one_or_many":
        key = o.keys[0]
        src.add(1, f"{v} = g({key!r})")
        src.add(1, f"if {v} is None:")
        src.add(2, f"{v} = {absent}")
        src.add(1, f"elif {v}.__class__ is int:")
        src.add(2, f"{v} = [{v}]")
        src.add(1, "else:")
        src.add(2, f"{v} = _int_list(ev, {key!r}, {v})")
        return v
    raise SpecError(f"{f.name}: rule {o.rule!r} does not apply to WebSocket events")


def compile_ws(spec: KindSpec, error: ErrorType) -> WsMapper:
    """The WebSocket mapper of ``spec``'s kind: ``f(event, received_ns) -> record``."""
    src = FunctionSource()
    src.add(1, "g = ev.get")
    values = [_ws_field(src, f, f.ws, f"v{i}") for i, f in enumerate(spec.fields)]
    items = ", ".join(f"{f.name!r}: {x}" for f, x in zip(spec.fields, values, strict=True))
    src.add(1, f"return {{{items}}}")
    mapper: WsMapper = src.compile("ev, received_ns", _ws_helpers(error), f"{spec.kind}_from_ws")
    return mapper


# ------------------------------------------------------------------------------------ REST
def _rest_helpers(error: ErrorType, bar_end: Callable[[int, str], int]) -> dict[str, Any]:
    def bad(result: Mapping[str, Any], key: str) -> Exception:
        if key not in result:
            return error(f"REST result without {key!r}: {dict(result)!r}"[:300])
        return error(f"REST result with null {key!r}")

    def ints(value: Any) -> list[int]:
        if isinstance(value, int | float):  # a lone code
            return [int(value)]
        return [int(v) for v in value]

    return {"_bad": bad, "_ints": ints, "_bar_end": bar_end, "_error": error}


_CONVERT = {"long": "int", "int": "int", "double": "float", "float": "float",
            "string": "str", "boolean": "bool"}


def _rest_value(f: FieldSpec, v: str, rule: str) -> str:
    if rule == "one_or_many":
        return f"_ints({v})"
    if f.base == "array":
        return f"[int(x) for x in {v}]"
    convert = _CONVERT.get(f.base)
    if convert is None:
        raise SpecError(f"{f.name}: a REST value of type {f.base} is not supported")
    return f"{convert}({v})"


def _rest_read(src: FunctionSource, f: FieldSpec, key: str, v: str, required: bool, absent: str,
               rule: str, scale: int = 1, depth: int = 1) -> None:
    scaled = "" if scale == 1 else f" * {scale}"
    src.add(depth, f"{v} = g({key!r})")
    if required:
        src.add(depth, f"if {v} is None:")
        src.add(depth + 1, f"raise _bad(result, {key!r})")
        src.add(depth, f"{v} = {_rest_value(f, v, rule)}{scaled}")
    else:
        src.add(depth, f"{v} = {absent} if {v} is None else {_rest_value(f, v, rule)}{scaled}")


def _rest_field(src: FunctionSource, f: FieldSpec, o: Origin, v: str, names: dict[str, str]) -> str:
    absent = src.const(o.absent)
    if o.rule == "constant":
        return src.const(o.value)
    if o.rule == "request":
        if o.keys[0] == "ticker":
            return "symbol"
        if o.keys[0] == "timeframe":
            return "timeframe"
        raise SpecError(f"{f.name}: unknown request parameter {o.keys[0]!r}")
    if o.rule == "bar_end":
        if "start_ns" not in names:
            raise SpecError(f"{f.name}: bar_end needs a start_ns field before it")
        return f"_bar_end({names['start_ns']}, timeframe)"
    if o.rule in ("required", "optional", "one_or_many"):
        _rest_read(src, f, o.keys[0], v, o.rule == "required", absent, o.rule, o.scale)
        return v
    if o.rule == "decimal":
        src.add(1, f"{v} = g({o.keys[0]!r})")
        src.add(1, f"if {v} is None or {v} == '':")
        if len(o.keys) > 1:
            _rest_read(src, f, o.keys[1], v, not f.nullable, absent, "required", depth=2)
        else:
            src.add(2, f"{v} = {absent}")
        src.add(1, "else:")
        src.add(2, f"{v} = float({v})")
        return v
    raise SpecError(f"{f.name}: rule {o.rule!r} does not apply to REST results")


def compile_rest(spec: KindSpec, error: ErrorType,
                 bar_end: Callable[[int, str], int]) -> RestMapper:
    """The REST mapper of ``spec``'s kind: ``f(result, symbol, timeframe) -> record``."""
    src = FunctionSource()
    src.add(1, "try:")
    body = FunctionSource()
    body.consts = src.consts  # one namespace for both
    body.add(1, "g = result.get")
    names: dict[str, str] = {}
    for i, f in enumerate(spec.fields):
        names[f.name] = _rest_field(body, f, f.rest, f"v{i}", names)
    items = ", ".join(f"{f.name!r}: {names[f.name]}" for f in spec.fields)
    body.add(1, f"return {{{items}}}")
    src.lines += ["    " + line for line in body.lines]
    src.add(1, "except _error:")
    src.add(2, "raise")
    src.add(1, "except (TypeError, ValueError, AttributeError) as exc:  # not an object too")
    src.add(2, f"raise _error(f'bad {spec.kind} result for {{symbol}}: {{exc}}') from None")
    mapper: RestMapper = src.compile("result, symbol, timeframe", _rest_helpers(error, bar_end),
                                     f"{spec.kind}_from_rest")
    return mapper
