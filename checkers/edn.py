"""A reader for Jepsen EDN history files, converted to cachecert op dicts.

Why this module exists: ``cachecert check --format jepsen-edn`` judges Jepsen/Knossos histories
with our checkers, and the conformance tests run the whole Knossos corpus. A general-purpose EDN
library is slow (seconds for the corpus); history files use a small subset of EDN (maps, vectors,
lists, sets, keywords, strings, numbers, nil/true/false, comments, a few tagged literals), so one
regex tokenizer and a stack builder read them fast and can name the file and line of any error.

Conversion: ``:process``, ``:type``, ``:f``, ``:value`` (and every other field) become dict entries
with plain string keys; keywords become strings without the colon; nil -> None; vectors, lists
and sets -> lists; maps -> dicts. ``:process :nemesis`` -> ``"nemesis"``. Each op gets ``index``
(its position, unless the file has one) and ``time_ns`` (``:time`` if present, else the position),
so that ``core.ops.pair`` and every checker work on it unchanged.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson

from core.history import TYPES, HistoryError

_TOKEN = re.compile(r"""
    (?:[\s,]|;[^\n]*)*            # whitespace, commas and comments before the token (one char a
                                  # step: no nested quantifier, no catastrophic backtracking)
    (?:
        (?P<open>\#\{|[\[\{\(])
      | (?P<close>[\]\}\)])
      | (?P<kw>:[^\s,\[\]\{\}\(\)";]+)
      | (?P<num>[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?M?N?(?=[\s,\]\}\);]|$))
      | (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<tag>\#_|\#[A-Za-z][^\s,\[\]\{\}\(\)"]*)
      | (?P<sym>[^\s,\[\]\{\}\(\)";:\#][^\s,\[\]\{\}\(\)";]*)
      | (?P<end>\Z)
    )""", re.X)

_CLOSE_OF = {"[": "]", "(": ")", "{": "}", "#{": "}"}
_STR_ESC = re.compile(r"\\(.)")
_ESC = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
_DISCARD = object()


class _Frame:
    __slots__ = ("kind", "items", "pos", "tag")

    def __init__(self, kind: str, pos: int, tag: str | None = None) -> None:
        self.kind = kind
        self.items: list[Any] = []
        self.pos = pos
        self.tag = tag


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def parse_edn(text: str, where: str = "<edn>", item_offsets: list[int] | None = None) -> list[tuple[Any, int]]:
    """Parse ``text`` into a list of (top-level form, start offset). Errors name ``where:line``.

    ``item_offsets``, if given, receives the start offset of every element of top-level collections.
    """
    out: list[tuple[Any, int]] = []
    stack: list[_Frame] = []
    pending_tag: list[tuple[str, int]] = []  # (tag, stack depth) waiting for their form
    pos = 0
    n = len(text)
    match = _TOKEN.match

    def err(msg: str, at: int) -> HistoryError:
        return HistoryError(f"{where}:{_line(text, at)}: {msg}")

    def emit(value: Any, at: int) -> None:
        # tags apply to the next form at their own depth; #inst/#uuid keep the value, #_ drops it
        discard = False
        while pending_tag and pending_tag[-1][1] == len(stack):
            if pending_tag.pop()[0] == "#_":
                discard = True
        if discard:
            return
        if stack:
            stack[-1].items.append(value)
            if item_offsets is not None and len(stack) == 1:
                item_offsets.append(at)
        else:
            out.append((value, at))

    while True:
        m = match(text, pos)
        if m is None:
            raise err(f"cannot read EDN at {text[pos:pos + 20].lstrip()!r}", pos + len(text[pos:pos + 20]) -
                      len(text[pos:pos + 20].lstrip()))
        kind = m.lastgroup
        if kind == "end":
            break
        tok = m.group(kind)
        start = m.start(kind)
        pos = m.end()
        if kind == "kw":
            emit(_Kw(tok[1:]), start)
        elif kind == "num":
            t = tok.rstrip("MN")
            try:
                emit(int(t) if ("." not in t and "e" not in t and "E" not in t) else float(t), start)
            except ValueError:
                raise err(f"bad number {tok!r}", start) from None
        elif kind == "str":
            body = tok[1:-1]
            if "\\" in body:
                body = _STR_ESC.sub(lambda e: _ESC.get(e.group(1), e.group(1)), body)
            emit(body, start)
        elif kind == "sym":
            if tok == "nil":
                emit(None, start)
            elif tok == "true":
                emit(True, start)
            elif tok == "false":
                emit(False, start)
            else:
                emit(_Sym(tok), start)
        elif kind == "open":
            stack.append(_Frame(tok, start))
        elif kind == "close":
            if not stack:
                raise err(f"unmatched {tok!r}", start)
            fr = stack.pop()
            if _CLOSE_OF[fr.kind] != tok:
                raise err(f"{tok!r} closes {fr.kind!r} opened on line {_line(text, fr.pos)}", start)
            if fr.kind == "{":
                items = fr.items
                if len(items) % 2:
                    raise err(f"map opened on line {_line(text, fr.pos)} has an odd number of forms", start)
                d: dict[Any, Any] = {}
                for i in range(0, len(items), 2):
                    k = items[i]
                    d[k if not isinstance(k, list) else tuple(k)] = items[i + 1]
                emit(d, fr.pos)
            else:
                emit(fr.items, fr.pos)
        elif kind == "tag":
            pending_tag.append((tok, len(stack)))
    if stack:
        raise err(f"unterminated {stack[-1].kind!r} (file truncated?)", stack[-1].pos)
    if pending_tag:
        raise err(f"tag {pending_tag[-1][0]} without a form", n)
    return out


class _Kw(str):
    """An EDN keyword (a str subclass, so it converts for free)."""

    __slots__ = ()


class _Sym(str):
    __slots__ = ()


def plain(x: Any) -> Any:
    """EDN-parsed data as plain Python (keywords -> str, vectors/sets -> list, maps -> dict)."""
    if isinstance(x, str):
        return str(x)
    if isinstance(x, list):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        return {(plain(k) if not isinstance(k, tuple) else str(k)): plain(v) for k, v in x.items()}
    return x


def read_edn_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a Jepsen EDN history file into op dicts (see the module docstring)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise HistoryError(f"{p}: cannot open history: {e.strerror}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise HistoryError(f"{p}:{line}: not UTF-8 text") from None
    return edn_to_history(text, str(p))


# -- fast path: most history files are keywords, numbers, nil and brackets only. Rewritten to JSON
# by a few C-level regex substitutions and parsed by orjson, they read ~4x faster. Anything else
# (strings, tags, symbols, odd numbers) or any doubt falls back to the tokenizer above, which also
# produces the precise file:line errors.
_MARK = "\x00map"
_FAST_REJECT = re.compile(r'["#\\]')
_FAST_COMMENT = re.compile(r";[^\n]*")
_FAST_NOT_BRACKET = re.compile(r"[^\[\]{}()]+")
_FAST_KW = re.compile(r":([^\s,\[\]{}()]+)")
_FAST_NIL = re.compile(r"(?<![\w\"-])nil(?![\w\"-])")
_FAST_SEP = re.compile(r"[\s,]+")
_FAST_OPEN_SEP = re.compile(r"\[,")
_FAST_SEP_CLOSE = re.compile(r",\]")


def _fast_value(v: Any) -> Any:
    if isinstance(v, list):
        if v and v[0] == _MARK:
            it = iter(v[1:])
            return {k if isinstance(k, str) else repr(k): _fast_value(x) for k, x in zip(it, it, strict=True)}
        return [_fast_value(x) for x in v]
    return v


def _fast_body(text: str) -> list[Any] | None:
    """The top-level forms as plain Python, or None when the fast path does not apply."""
    if _FAST_REJECT.search(text):
        return None
    t = _FAST_COMMENT.sub("", text)
    # the JSON rewrite maps every bracket to [ ]: first check they pair up as EDN brackets
    b = _FAST_NOT_BRACKET.sub("", t)
    while b:
        nb = b.replace("()", "").replace("[]", "").replace("{}", "")
        if nb == b:
            return None
        b = nb
    # keywords -> JSON strings: the few distinct ones by plain str.replace, longest first (so a
    # short keyword never matches inside a longer one, already converted); no per-match callback
    for kw in sorted(set(_FAST_KW.findall(t)), key=len, reverse=True):
        t = t.replace(":" + kw, '"' + kw + '"')
    t = _FAST_NIL.sub("null", t)
    t = t.replace("{", '["\\u0000map" ').replace("}", "]").replace("(", "[").replace(")", "]")
    t = _FAST_SEP.sub(",", t.strip())
    t = _FAST_SEP_CLOSE.sub("]", _FAST_OPEN_SEP.sub("[", t))
    if not t:
        return None
    try:
        one = orjson.loads(t)  # a single top-level vector or list
        return [one] if t.startswith("[") else None
    except orjson.JSONDecodeError:
        pass
    try:
        data = orjson.loads("[" + t + "]")  # a sequence of top-level forms (one map per line)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, list) else None


def _fast_ops(text: str) -> list[dict[str, Any]] | None:
    data = _fast_body(text)
    if data is None:
        return None
    # one top-level vector/list of maps, or a sequence of top-level maps
    body = data[0] if len(data) == 1 and isinstance(data[0], list) and data[0][:1] != [_MARK] else data
    ops = []
    for m in body:
        if type(m) is not list or not m or m[0] != _MARK or len(m) % 2 != 1:
            return None
        it = iter(m)
        next(it)
        op = dict(zip(it, it, strict=True))
        for k, v in op.items():
            if type(v) is list:
                op[k] = _fast_value(v)
            elif type(k) is not str:
                return None
        ops.append(op)
    return ops


def edn_to_history(text: str, where: str = "<edn>") -> list[dict[str, Any]]:
    fast = _fast_ops(text)
    if fast is not None:
        try:
            return _to_ops(fast, None, text, where, converted=True)
        except HistoryError:
            pass  # re-read slowly for the precise line
    item_offsets: list[int] = []
    forms = parse_edn(text, where, item_offsets)
    if not forms:
        raise HistoryError(f"{where}:1: empty file: no history")
    if len(forms) == 1 and isinstance(forms[0][0], list):
        body = forms[0][0]
        offsets = item_offsets
    else:
        body = [f for f, _ in forms]
        offsets = [o for _, o in forms]
    return _to_ops(body, offsets, text, where)


def _to_ops(body: list[Any], offsets: list[int] | None, text: str, where: str,
            converted: bool = False) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for i, m in enumerate(body):
        at = offsets[i] if offsets is not None and i < len(offsets) else 0
        if not isinstance(m, dict):
            what = "a vector" if isinstance(m, list) else type(m).__name__ if not isinstance(m, str) else repr(str(m))
            raise HistoryError(f"{where}:{_line(text, at)}: op {i}: expected a map like "
                               f"{{:process 0, :type :invoke, :f :read, :value nil}}, found {what}: "
                               "not a Jepsen history")
        op: dict[str, Any]
        if converted:
            op = m
        else:
            op = {}
            for k, v in m.items():
                ks = str(k) if isinstance(k, str) else repr(k)
                if isinstance(v, str) or v is None or isinstance(v, (int, float)):
                    op[ks] = str(v) if isinstance(v, str) else v
                else:
                    op[ks] = plain(v)
        for field in ("process", "type", "f"):
            if field not in op:
                raise HistoryError(f"{where}:{_line(text, at)}: op {i} has no :{field}: "
                                   "not a Jepsen history op")
        if op["type"] not in TYPES:
            raise HistoryError(f"{where}:{_line(text, at)}: op {i}: unknown :type "
                               f"{op['type']!r} (expected one of {', '.join(TYPES)})")
        op.setdefault("value", None)
        if "index" not in op or not isinstance(op["index"], int):
            op["index"] = i
        t = op.get("time")
        op["time_ns"] = t if isinstance(t, int) else i
        ops.append(op)
    return ops
