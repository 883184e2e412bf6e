"""Schema-specialised Avro binary encoders and decoders, generated as Python source at import.

fastavro walks the schema for every record; here each schema is compiled once into one
straight-line function that reads/writes every field directly: zigzag varints through
precomputed tables (small values and 14-bit chunks), consecutive doubles through one
precompiled ``struct.Struct``, unions/enums/arrays inlined. The output is byte-for-byte
what fastavro writes (tests compare them on thousands of random records).

Scope: records of null, boolean, int, long, float, double, string, bytes, enum, arrays of
those, and unions of null with one of those. Any other schema returns None from the
compile functions and the codec uses fastavro for it.

Contract of the generated functions:

- ``encode(record) -> bytes`` raises *some* exception (KeyError, TypeError, ...) for a
  record it cannot encode exactly; the codec then asks fastavro, which validates and either
  encodes (e.g. a missing field that has a default) or reports a clear error. The fast path
  never produces bytes for a record fastavro would refuse: out-of-range ints/longs, wrong
  types, unknown enum symbols and bad array values all raise.
- ``decode(data, pos) -> (record, end)`` reads one body starting at ``pos``; it raises
  IndexError/ValueError/... on truncated or malformed input (the codec wraps them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

Encoder = Callable[[dict[str, Any]], bytes]
Decoder = Callable[[bytes, int], tuple[dict[str, Any], int]]

_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_CACHE_MAX = 1 << 16  # entries per encoding cache (symbols, condition lists)
# Fields with few distinct values whose encodings are worth remembering.
LOW_CARDINALITY_FIELDS = frozenset({"symbol", "timeframe"})
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_SMALL = 1 << 13  # values in [-8192, 8192) zigzag into at most two varint bytes


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# zigzag varint of every small value: a dict, so that a negative key never wraps around
# like a list index would, and a non-int key (str, None, 1.5) raises KeyError.
SMALL: dict[int, bytes] = {v: _varint_bytes((v << 1) ^ (v >> 63)) for v in range(-_SMALL, _SMALL)}
# 14-bit chunk -> its two varint bytes with continuation bits / the final 1-2 bytes.
_CHUNK = tuple(bytes(((c & 0x7F) | 0x80, ((c >> 7) & 0x7F) | 0x80)) for c in range(1 << 14))
_LAST = tuple(_varint_bytes(c) for c in range(1 << 14))
_LAST8 = _LAST[:256]  # the ninth byte of a 64-bit varint: IndexError beyond 64 bits


def _high_bytes(cache: dict[int, bytes], h: int) -> bytes:
    """Varint bytes 5..9 of a 9-byte varint whose value shifted right by 28 is ``h``;
    IndexError beyond 64 bits."""
    out = _CHUNK[h & 0x3FFF] + _CHUNK[(h >> 14) & 0x3FFF] + _LAST8[h >> 28]
    if len(cache) >= 4096:
        cache.clear()
    cache[h] = out
    return out


def encode_long(v: int) -> bytes:
    """Zigzag varint of a 64-bit signed int; OverflowError/TypeError when it is not one."""
    n = (v << 1) ^ (v >> 63)  # TypeError for float/str/None
    if n < 16384:
        if n < 0:  # only for v below -2**63
            raise OverflowError(f"{v} does not fit in an Avro long")
        return _LAST[n]
    if n < 268435456:
        return _CHUNK[n & 0x3FFF] + _LAST[n >> 14]
    if n < 4398046511104:
        return _CHUNK[n & 0x3FFF] + _CHUNK[(n >> 14) & 0x3FFF] + _LAST[n >> 28]
    if n < 72057594037927936:
        return (_CHUNK[n & 0x3FFF] + _CHUNK[(n >> 14) & 0x3FFF] + _CHUNK[(n >> 28) & 0x3FFF]
                + _LAST[n >> 42])
    if n >> 64:
        raise OverflowError(f"{v} does not fit in an Avro long")
    return (_CHUNK[n & 0x3FFF] + _CHUNK[(n >> 14) & 0x3FFF] + _CHUNK[(n >> 28) & 0x3FFF]
            + _CHUNK[(n >> 42) & 0x3FFF] + _LAST[n >> 56])


def encode_int(v: int) -> bytes:
    """Zigzag varint of a 32-bit signed int; OverflowError/TypeError when it is not one."""
    if not _INT_MIN <= v <= _INT_MAX:  # TypeError for None/str
        raise OverflowError(f"{v} does not fit in an Avro int")
    if v.__class__ is not int and v.__class__ is not bool:
        raise TypeError(f"{v!r} is not an int")
    return encode_long(v)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(zigzag-decoded value, next position) of the varint at ``pos``."""
    b = data[pos]
    n = b & 0x7F
    shift = 7
    pos += 1
    while b & 0x80:
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")
        b = data[pos]
        n |= (b & 0x7F) << shift
        shift += 7
        pos += 1
    return (n >> 1) ^ -(n & 1), pos


# decoding: 16 bits of varint (two bytes) -> their 14 payload bits; mask of the first L bytes
_C16 = tuple((u & 0x7F) | (((u >> 8) & 0x7F) << 7) for u in range(1 << 16))
_MASKS = tuple((1 << (8 * n)) - 1 for n in range(11))

def _high_fill(cache: dict[bytes, int], k: bytes) -> int | None:
    """Payload of varint bytes 4..8 if they end a 9-byte varint (continuation bits on the
    first four, off on the last), else None. Remembered, in a cache of bounded size."""
    if len(k) != 5 or not (k[0] & k[1] & k[2] & k[3] & 0x80) or k[4] & 0x80:
        return None
    value = ((k[0] & 0x7F) << 28 | (k[1] & 0x7F) << 35 | (k[2] & 0x7F) << 42
             | (k[3] & 0x7F) << 49 | k[4] << 56)
    if len(cache) >= 4096:
        cache.clear()
    cache[k] = value
    return value


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}


class _Unsupported(Exception):
    pass


def _expand(schema: Any, named: dict[str, Any] | None = None, namespace: str = "") -> Any:
    """``schema`` with references to named types replaced by their definitions."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema
        found = named.get(schema) or named.get(f"{namespace}.{schema}")
        if found is None:
            raise _Unsupported(f"unknown type {schema!r}")
        return found
    if isinstance(schema, list):
        return [_expand(b, named, namespace) for b in schema]
    if not isinstance(schema, Mapping):
        raise _Unsupported(repr(schema))
    out = dict(schema)
    if "name" in out and out.get("type") in ("record", "enum", "fixed"):
        name = str(out["name"])
        namespace = str(out.get("namespace", namespace)) if "." not in name \
            else name.rpartition(".")[0]
        full = name if "." in name else (f"{namespace}.{name}" if namespace else name)
        named[full] = out
        named.setdefault(name.rpartition(".")[2], out)
    if out.get("type") == "record":
        out["fields"] = [{**f, "type": _expand(f["type"], named, namespace)}
                         for f in out["fields"]]
    elif out.get("type") == "array":
        out["items"] = _expand(out["items"], named, namespace)
    elif out.get("type") == "map":
        out["values"] = _expand(out["values"], named, namespace)
    return out


def _resolve(t: Any) -> Any:
    """The type without named-type indirection (dict for complex, str for primitive)."""
    if isinstance(t, dict) and t.get("type") in _PRIMITIVES and len(t) == 1:
        return t["type"]
    return t


class _Gen:
    """Builds one function's source; helper objects become default arguments (fast locals)."""

    def __init__(self) -> None:
        self.consts: dict[str, Any] = {}
        self._names: dict[Any, str] = {}
        self.lines: list[str] = []
        self.n = 0

    def const(self, value: Any, hint: str = "k", key: Any = None) -> str:
        """A default-argument name for ``value`` (one per ``key``, default: identity)."""
        key = ("id", id(value)) if key is None else key
        name = self._names.get(key)
        if name is None:
            name = f"_{hint}{len(self.consts)}"
            self.consts[name] = value
            self._names[key] = name
        return name

    def var(self, hint: str = "v") -> str:
        self.n += 1
        return f"{hint}{self.n}"


# ----------------------------------------------------------------------------- encoder
def _enc_expr(g: _Gen, t: Any, x: str, wide: bool = False, tag: bytes = b"") -> str:
    """An expression giving the bytes of value ``x`` (a simple name) of type ``t``.

    ``wide``: the value is usually a nanosecond timestamp (9 varint bytes), so that case is
    inlined and tested first. ``tag``: bytes to put in front (a union branch), joined without
    an extra copy where the expression is a join anyway.
    """
    if tag and not (wide and _resolve(t) == "long"):
        return f"{tag!r} + {_enc_expr(g, t, x, wide)}"
    t = _resolve(t)
    small = g.const(SMALL, "S")
    if t == "null":
        return f'(b"" if {x} is None else {g.const(_fail, "fail")}({x}))'
    if t == "boolean":
        return f'(b"\\x01" if {x} else b"\\x00")'
    if t == "int":
        # ids, tapes and condition codes are small: one table lookup. A value outside the
        # table (or not an int) is a KeyError: the reference path encodes or refuses it.
        return f"{small}[{x}]"
    if t == "long":
        elong = g.const(encode_long, "elong")
        c, n = g.const(_CHUNK, "C"), g.var("n")
        zigzag = f"({n} := ({x} << 1) ^ ({x} >> 63))"
        if not wide:  # counts, sequence numbers: inline up to four bytes
            last = g.const(_LAST, "L")
            return (f"({last}[{n}] if {zigzag} < 16384 else {c}[{n} & 16383] + {last}[{n} >> 14] "
                    f"if {n} < 268435456 else {elong}({x}))")
        # the last five bytes of a timestamp change every ~134 ms: remember them (bounded)
        high = g.const({}, "H", key="high-bytes")
        fill = g.const(_high_bytes, "hb", key="high-bytes-fill")
        head = f"{tag!r}, " if tag else ""
        slow = f"{tag!r} + {elong}({x})" if tag else f"{elong}({x})"
        return (f"(b''.join(({head}{c}[{n} & 16383], {c}[{n} >> 14 & 16383], "
                f"{high}.get({n} >> 28) or {fill}({high}, {n} >> 28))) "
                f"if {zigzag} >= {1 << 56} else {slow})")
    if t in ("float", "double"):
        fmt = "<f" if t == "float" else "<d"
        return f"{g.const(struct.Struct(fmt).pack, 'pk', key=('pack', fmt))}({x})"
    if t == "string":
        # str.encode: AttributeError for anything but a str; a length beyond the table is a
        # KeyError, which sends the (rare) record to the reference path
        e = g.var("s")
        return f"({small}[len({e} := {x}.encode())] + {e})"
    if t == "cached-string":  # a field with few distinct values (symbol): remember them
        cache = g.const({}, "T", key=("string-cache", x))
        fill = g.const(_cache_string, "cs", key="cache-string")
        return f"({cache}.get({x}) or {fill}({cache}, {x}))"
    if t == "bytes":
        return f"{g.const(_enc_bytes, 'ebytes')}({x})"
    if isinstance(t, dict) and t.get("type") == "enum":
        table = {s: SMALL[i] for i, s in enumerate(t["symbols"])}
        return f"{g.const(table, 'E')}[{x}]"
    raise _Unsupported(repr(t))


def _cache_string(cache: dict[str, bytes], s: str) -> bytes:
    b = s.encode()  # AttributeError for anything but a str
    out = SMALL[len(b)] + b
    if len(cache) < _CACHE_MAX and s.__class__ is str:
        cache[s] = out
    return out


def _fail(x: Any) -> bytes:
    raise TypeError(f"{x!r} is not null")


def _enc_bytes(b: bytes) -> bytes:
    if not isinstance(b, bytes | bytearray):
        raise TypeError(f"{b!r} is not bytes")
    return encode_long(len(b)) + bytes(b)


def _enc_field(g: _Gen, t: Any, x: str, wide: bool) -> tuple[list[str], str]:
    """(statements, expression) writing ``x`` of type ``t``."""
    t = _resolve(t)
    if isinstance(t, list):
        branches = [_resolve(b) for b in t]
        if len(branches) == 2 and "null" in branches:
            null_index = branches.index("null")
            other = branches[1 - null_index]
            if isinstance(other, list) or (isinstance(other, dict)
                                            and other.get("type") in ("array", "map", "record")):
                raise _Unsupported("union of null and a complex type")
            tag_null = SMALL[null_index]
            tag_other = SMALL[1 - null_index]
            if other == "int":  # branch + value in one lookup (None included)
                table: dict[Any, bytes] = {v: tag_other + b for v, b in SMALL.items()}
                table[None] = tag_null
                return [], f"{g.const(table, 'U', key=('union-int', null_index))}[{x}]"
            inner = _enc_expr(g, other, x, wide, tag=tag_other)
            return [], f"({tag_null!r} if {x} is None else {inner})"
        raise _Unsupported("union other than [null, T]")
    if isinstance(t, dict) and t.get("type") == "array":
        items = _resolve(t["items"])
        if isinstance(items, list | dict) and not (isinstance(items, dict)
                                                   and items.get("type") == "enum"):
            raise _Unsupported("array of complex items")
        item, n, key, out = g.var("i"), g.var("n"), g.var("k"), g.var("a")
        inner = _enc_expr(g, items, item)
        lst, tpl = g.const(list, "list", key="list"), g.const(tuple, "tuple", key="tuple")
        small = g.const(SMALL, "S")
        joined = f'b"".join([{inner} for {item} in {x}])'
        stmts = [f"if {x}.__class__ is not {lst} and {x}.__class__ is not {tpl}:",
                 "    raise TypeError('array field is not a list')"]
        compute = [f"{n} = len({x})",
                   f'{out} = ({small}[{n}] + {joined} + b"\\x00") if {n} else b"\\x00"']
        if items in ("int", "long") or (isinstance(items, dict) and items["type"] == "enum"):
            # condition lists come from a small vocabulary: remember their encodings
            cache = g.const({}, "A", key=("array-cache", x))
            stmts += [f"{key} = {tpl}({x})",
                      f"{out} = {cache}.get({key})",
                      f"if {out} is None:"]
            stmts += [f"    {line}" for line in compute]
            stmts += [f"    if len({cache}) < {_CACHE_MAX}:",
                      f"        {cache}[{key}] = {out}"]
        else:
            stmts += compute
        return stmts, out
    return [], _enc_expr(g, t, x, wide)


def _is_wide(name: str) -> bool:
    """Our convention: *_ns fields are Unix-nanosecond timestamps (9-byte varints)."""
    return name.endswith("_ns")


def compile_encoder(schema: Mapping[str, Any], prefix: bytes = b"") -> Encoder | None:
    """A function record -> ``prefix`` + Avro body for ``schema``; None if out of scope.

    ``prefix`` (the message framing) is written in the same join as the body, so a framed
    message costs no extra copy.
    """
    expanded = _expanded_record(schema)
    if expanded is None:
        return None
    schema = expanded
    g = _Gen()
    body: list[str] = []
    parts: list[str] = []
    fields = list(schema["fields"])
    try:
        i = 0
        while i < len(fields):
            t = _resolve(fields[i]["type"])
            if t in ("double", "float"):  # pack a run of doubles/floats with one struct
                j = i
                fmt = "<"
                names = []
                while j < len(fields) and _resolve(fields[j]["type"]) in ("double", "float"):
                    fmt += "d" if _resolve(fields[j]["type"]) == "double" else "f"
                    names.append(f"r[{fields[j]['name']!r}]")
                    j += 1
                pack = g.const(struct.Struct(fmt).pack, "pk", key=("pack", fmt))
                parts.append(f"{pack}({', '.join(names)})")
                i = j
                continue
            x = g.var("x")
            body.append(f"{x} = r[{fields[i]['name']!r}]")
            if t == "string" and fields[i]["name"] in LOW_CARDINALITY_FIELDS:
                t = "cached-string"
            stmts, expr = _enc_field(g, t, x, _is_wide(fields[i]["name"]))
            body.extend(stmts)
            parts.append(expr)
            i += 1
    except _Unsupported:
        return None
    args = "".join(f", {name}={name}" for name in g.consts)
    src = [f"def encode(r{args}):"]
    src += [f"    {line}" for line in body]
    if prefix:
        parts.insert(0, repr(bytes(prefix)))
    src.append(f"    return b''.join(({', '.join(parts)},))" if parts else "    return b''")
    namespace: dict[str, Any] = dict(g.consts)
    namespace["__source__"] = "\n".join(src)
    exec(namespace["__source__"], namespace)  # source generated from a schema, no user input
    encoder: Encoder = namespace["encode"]
    encoder.__doc__ = f"Avro body of a {schema.get('name')} record (generated)."
    return encoder


# ----------------------------------------------------------------------------- decoder
def _dec_stmts(g: _Gen, t: Any, out: str, ind: str, wide: bool = False) -> list[str]:
    """Statements that read a value of type ``t`` at ``p`` (advancing it) into ``out``.

    ``wide``: usually a 9-byte varint, decoded from one little-endian int of 10 bytes with
    a 16-bit table instead of a byte loop.
    """
    t = _resolve(t)
    varint = g.const(decode_varint, "vi")
    if t == "long" and wide:
        frm = g.const(int.from_bytes, "frm", key="int.from_bytes")
        c16, masks = g.const(_C16, "C"), g.const(_MASKS, "M")
        high, fill = g.const({}, "H", key="high-cache"), g.const(_high_fill, "hf", key="hf")
        generic = [f"x = {frm}(d[p:p + 10], 'little')",
                   "m = ~x & 0x80808080808080808080",
                   "if not m: raise ValueError('varint longer than 10 bytes')",
                   "L = (m & -m).bit_length() >> 3",
                   "if p + L > len(d): raise IndexError('truncated varint')",
                   f"x &= {masks}[L]",
                   f"x = ({c16}[x & 65535] | {c16}[x >> 16 & 65535] << 14 "
                   f"| {c16}[x >> 32 & 65535] << 28 | {c16}[x >> 48 & 65535] << 42 "
                   f"| {c16}[x >> 64] << 56)",
                   "if x >> 64: raise ValueError('long out of range')",
                   f"{out} = (x >> 1) ^ -(x & 1)",
                   "p += L"]
        # A nanosecond timestamp is a 9-byte varint whose last five bytes change only every
        # ~134 ms: their value comes from a small cache, the first four bytes from the table.
        return [f"{ind}hv = {high}.get(k := d[p + 4:p + 9])",
                f"{ind}if hv is None:",
                f"{ind}    hv = {fill}({high}, k)",
                f"{ind}if hv is not None and "
                f"(lo := {frm}(d[p:p + 4], 'little')) & 0x80808080 == 0x80808080:",
                f"{ind}    x = hv | {c16}[lo & 65535] | {c16}[lo >> 16] << 14",
                f"{ind}    {out} = (x >> 1) ^ -(x & 1)",
                f"{ind}    p += 9",
                f"{ind}else:"] + [f"{ind}    {line}" for line in generic]
    if t == "null":
        return [f"{ind}{out} = None"]
    if t == "boolean":
        return [f"{ind}b = d[p]", f"{ind}p += 1",
                f"{ind}if b > 1: raise ValueError('bad boolean byte %d' % b)",
                f"{ind}{out} = b == 1"]
    if t == "long":  # counts, sequence numbers: up to four bytes without a byte loop
        frm = g.const(int.from_bytes, "frm", key="int.from_bytes")
        c16, masks = g.const(_C16, "C"), g.const(_MASKS, "M")
        return [f"{ind}b = d[p]",
                f"{ind}if b < 128:",
                f"{ind}    {out} = (b >> 1) ^ -(b & 1)",
                f"{ind}    p += 1",
                f"{ind}elif m := ~(x := {frm}(d[p:p + 4], 'little')) & 0x80808080:",
                f"{ind}    L = (m & -m).bit_length() >> 3",
                f"{ind}    if p + L > len(d): raise IndexError('truncated varint')",
                f"{ind}    x &= {masks}[L]",
                f"{ind}    x = {c16}[x & 65535] | {c16}[x >> 16] << 14",
                f"{ind}    {out} = (x >> 1) ^ -(x & 1)",
                f"{ind}    p += L",
                f"{ind}else:",
                f"{ind}    {out}, p = {varint}(d, p)",
                f"{ind}    if not {_LONG_MIN} <= {out} <= {_LONG_MAX}: "
                "raise ValueError('long out of range')"]
    if t == "int":
        lines = [f"{ind}b = d[p]",
                 f"{ind}if b < 128:",
                 f"{ind}    {out} = (b >> 1) ^ -(b & 1)",
                 f"{ind}    p += 1",
                 f"{ind}else:",
                 f"{ind}    {out}, p = {varint}(d, p)",
                 f"{ind}    if not {_INT_MIN} <= {out} <= {_INT_MAX}: "
                 "raise ValueError('int out of range')"]
        return lines
    if t in ("float", "double"):
        size = 4 if t == "float" else 8
        fmt = "<f" if t == "float" else "<d"
        unpack = g.const(struct.Struct(fmt).unpack_from, "up", key=("unpack", fmt))
        return [f"{ind}{out}, = {unpack}(d, p)", f"{ind}p += {size}"]
    if t in ("string", "bytes"):
        n = g.var("n")
        lines = _dec_stmts(g, "long", n, ind)
        lines += [f"{ind}if {n} < 0 or p + {n} > len(d): raise ValueError('bad length')"]
        if t == "string":
            lines.append(f"{ind}{out} = d[p:p + {n}].decode()")
        else:
            lines.append(f"{ind}{out} = d[p:p + {n}]")
        lines.append(f"{ind}p += {n}")
        return lines
    if isinstance(t, dict) and t.get("type") == "enum":
        if len(t["symbols"]) > 64:
            raise _Unsupported("enum with more than 64 symbols")
        # one varint byte: zigzag index -> symbol (KeyError for a bad index)
        by_byte = g.const({2 * i: s for i, s in enumerate(t["symbols"])}, "sym")
        return [f"{ind}{out} = {by_byte}[d[p]]", f"{ind}p += 1"]
    if isinstance(t, list):
        branches = [_resolve(b) for b in t]
        if len(branches) != 2 or "null" not in branches:
            raise _Unsupported("union other than [null, T]")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        # the branch index of a two-branch union is one byte: zigzag 0 -> 0, 1 -> 2
        lines = [f"{ind}b = d[p]", f"{ind}p += 1",
                 f"{ind}if b == {2 * null_index}:",
                 f"{ind}    {out} = None",
                 f"{ind}elif b == {2 * (1 - null_index)}:"]
        lines += _dec_stmts(g, other, out, ind + "    ", wide)
        lines.append(f"{ind}else: raise ValueError('bad union branch byte %d' % b)")
        return lines
    if isinstance(t, dict) and t.get("type") == "array":
        items = _resolve(t["items"])
        if isinstance(items, list) or (isinstance(items, dict) and items.get("type") != "enum"):
            raise _Unsupported("array of complex items")
        count = g.var("c")
        item = g.var("it")
        lines = [f"{ind}{out} = []"]
        lines += _dec_stmts(g, "long", count, ind)
        lines.append(f"{ind}while {count}:")
        lines.append(f"{ind}    if {count} < 0:")  # a block with its byte size
        lines.append(f"{ind}        {count} = -{count}")
        lines += _dec_stmts(g, "long", "_size", ind + "        ")
        lines.append(f"{ind}    if {count} > len(d): raise ValueError('bad array count')")
        lines.append(f"{ind}    for _ in range({count}):")
        lines += _dec_stmts(g, items, item, ind + "        ")
        lines.append(f"{ind}        {out}.append({item})")
        lines += _dec_stmts(g, "long", count, ind + "    ")
        return lines
    raise _Unsupported(repr(t))


def _expanded_record(schema: Any) -> dict[str, Any] | None:
    """``schema`` with its named types expanded, or None unless it is a record within
    the generators' scope."""
    if not isinstance(schema, Mapping) or schema.get("type") != "record":
        return None
    try:
        return _expand(schema)
    except _Unsupported:
        return None


def compile_decoder(schema: Mapping[str, Any]) -> Decoder | None:
    """A function (data, pos) -> (record, end) for bodies written with exactly ``schema``."""
    expanded = _expanded_record(schema)
    if expanded is None:
        return None
    schema = expanded
    g = _Gen()
    body: list[str] = []
    names: list[tuple[str, str]] = []
    fields = list(schema["fields"])
    try:
        i = 0
        while i < len(fields):
            if _resolve(fields[i]["type"]) in ("double", "float"):  # one unpack for a run
                j, fmt, outs = i, "<", []
                while j < len(fields) and _resolve(fields[j]["type"]) in ("double", "float"):
                    fmt += "d" if _resolve(fields[j]["type"]) == "double" else "f"
                    outs.append(g.var("f"))
                    names.append((fields[j]["name"], outs[-1]))
                    j += 1
                st = struct.Struct(fmt)
                unpack = g.const(st.unpack_from, "up", key=("unpack", fmt))
                body += [f"    {', '.join(outs)}, = {unpack}(d, p)", f"    p += {st.size}"]
                i = j
                continue
            x = g.var("f")
            body += _dec_stmts(g, fields[i]["type"], x, "    ", _is_wide(fields[i]["name"]))
            names.append((fields[i]["name"], x))
            i += 1
    except _Unsupported:
        return None
    args = "".join(f", {name}={name}" for name in g.consts)
    src = [f"def decode(d, p{args}):", *body]
    record = ", ".join(f"{name!r}: {x}" for name, x in names)
    src.append(f"    return {{{record}}}, p")
    namespace: dict[str, Any] = dict(g.consts)
    namespace["__source__"] = "\n".join(src)
    exec(namespace["__source__"], namespace)  # source generated from a schema, no user input
    decoder: Decoder = namespace["decode"]
    decoder.__doc__ = f"Decode an Avro body of a {schema.get('name')} record (generated)."
    return decoder
