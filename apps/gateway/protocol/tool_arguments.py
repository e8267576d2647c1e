"""Tool-call arguments made into the JSON object the Anthropic surface promises.

OpenAI-compatible servers pass the model's ``arguments`` text through as it was
generated; small models put raw control characters in strings (a newline), stop
mid-object (``max_tokens``), or write something that is not JSON at all. Anthropic
clients parse ``tool_use.input`` as an object and, in streams, parse the joined
``input_json_delta`` pieces after every delta (the Python SDK with a partial-JSON
parser), so every prefix sent must be a JSON prefix and the whole one object.

* ``ToolArgumentsStream``: a small state machine over the fragments as they stream.
  Raw control characters inside strings are escaped, an invalid escape keeps its
  backslash as text, a trailing comma is held back (and dropped if nothing follows),
  numbers and ``true``/``false``/``null`` are sent once complete; ``finish()`` closes
  what is open (a string, a key without a value gets ``null``, arrays, objects).
  Text that does not start as an object is sent as ``{"_raw_arguments": "<text>"}``;
  text that breaks the grammar later keeps the members parsed so far and adds
  ``"_raw_arguments"`` with the whole text the model wrote.
* ``parse_tool_arguments``: the non-stream ``input``: JSON if it parses, else the
  same repair as in streams when the text keeps to the grammar (so both answers
  agree), else the ``json-repair`` library's repair when it yields an object (single
  quotes, bare keys, Python literals), else ``{"_raw_arguments": "<text>"}``.

Pure Python, no Django.
"""

from __future__ import annotations

import re
from typing import Any

import json_repair
import orjson

__all__ = ["RAW_ARGUMENTS_KEY", "ToolArgumentsStream", "parse_tool_arguments"]

RAW_ARGUMENTS_KEY = "_raw_arguments"

_STRING_SPECIAL = re.compile(r'["\\\x00-\x1f]')
_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_SIMPLE_ESCAPES = frozenset('"\\/bfnrt')
_HEX = frozenset("0123456789abcdefABCDEF")
_WORDS = ("true", "false", "null")
_LITERAL_START = frozenset("tfn-0123456789")
_LITERAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.+-")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NUMBER_PREFIX = re.compile(r"-|-?(?:0|[1-9]\d*)(?:\.\d*|(?:\.\d+)?[eE][+-]?\d*)?")
_WHITESPACE = frozenset(" \t\r\n")


def _escape(text: str) -> str:
    """``text`` as the inside of a JSON string."""
    try:
        return orjson.dumps(text).decode()[1:-1]
    except orjson.JSONEncodeError:  # lone surrogates
        return orjson.dumps(text.encode("utf-8", "replace").decode()).decode()[1:-1]


def _literal_prefix_ok(literal: str) -> bool:
    if literal[0] in "tfn":
        return any(word.startswith(literal) for word in _WORDS)
    return _NUMBER_PREFIX.fullmatch(literal) is not None


def _literal_complete(literal: str) -> bool:
    return literal in _WORDS or _NUMBER.fullmatch(literal) is not None


def _literal_completed(literal: str) -> str:
    """The shortest valid literal that ``literal`` (a valid prefix) starts."""
    if literal[0] in "tfn":
        return next(word for word in _WORDS if word.startswith(literal))
    return literal + "0" if literal[-1] in "-.eE+" else literal


class _Broken(Exception):
    """The text left the JSON grammar at this character."""


class ToolArgumentsStream:
    """One tool call's argument fragments → pieces of one valid JSON object.

    ``feed(fragment)`` returns what can be sent now (possibly ""), ``finish()`` the
    closing piece (possibly ""); nothing is returned after ``finish()``.
    """

    __slots__ = (
        "_escape",
        "_expect",
        "_held",
        "_in_string",
        "_key_string",
        "_literal",
        "_mode",
        "_raw",
        "_stack",
        "broken",
        "repaired",
    )

    def __init__(self) -> None:
        self._mode = "start"  # start → json | raw → done
        self._stack: list[str] = []  # open "{" / "["
        # What the innermost container takes next: value, value_or_end, key_or_end,
        # key, colon, comma_or_end.
        self._expect = "value"
        self._in_string = False
        self._key_string = False
        self._escape = ""  # an escape sequence begun but not complete ("\\", "\\u0")
        self._literal = ""  # a number/true/false/null, sent once complete
        self._held = ""  # a comma (and whitespace after it) until the next token
        self._raw: list[str] = []  # the fragments as the model wrote them
        self.repaired = False  # whether anything was changed on the way
        self.broken = False  # whether the text went into "_raw_arguments"

    # -- public ------------------------------------------------------------

    def feed(self, fragment: str) -> str:
        if not fragment or self._mode == "done":
            return ""
        self._raw.append(fragment)
        if self._mode == "raw":
            return _escape(fragment)
        start = 0
        if self._mode == "start":
            stripped = fragment.lstrip()
            if not stripped:
                return ""
            if stripped[0] != "{":
                self._mode = "raw"
                self.repaired = self.broken = True
                return '{"' + RAW_ARGUMENTS_KEY + '": "' + _escape("".join(self._raw).lstrip())
            self._mode = "json"
            start = len(fragment) - len(stripped)
        out: list[str] = []
        try:
            self._scan(fragment, start, out)
        except _Broken:
            self._salvage(out)
        return "".join(out)

    def finish(self) -> str:
        mode, self._mode = self._mode, "done"
        if mode == "raw":
            return '"}'
        if mode != "json":
            return ""
        out: list[str] = []
        self._close(0, out)
        return "".join(out)

    # -- scanning ----------------------------------------------------------

    def _emit(self, out: list[str], text: str) -> None:
        if self._held:
            out.append(self._held)
            self._held = ""
        out.append(text)

    def _value_done(self) -> None:
        if self._stack:
            self._expect = "comma_or_end"
        else:
            self._mode = "done"

    def _scan(self, text: str, i: int, out: list[str]) -> None:
        n = len(text)
        while i < n:
            if self._mode == "done":
                if text[i:].strip():
                    self.repaired = True  # text after the object: dropped
                return
            if self._in_string:
                i = self._scan_string(text, i, out)
                continue
            c = text[i]
            i += 1
            if self._literal:
                if c in _LITERAL_CHARS:
                    if not _literal_prefix_ok(self._literal + c):
                        raise _Broken
                    self._literal += c
                    continue
                if not _literal_complete(self._literal):
                    raise _Broken
                out.append(self._literal)
                self._literal = ""
                self._value_done()
                if self._mode == "done":
                    continue
            if c in _WHITESPACE:
                if self._held:
                    self._held += c
                else:
                    out.append(c)
                continue
            self._structural(c, out)

    def _structural(self, c: str, out: list[str]) -> None:
        expect = self._expect
        if expect in ("value", "value_or_end"):
            if c == "{":
                self._emit(out, c)
                self._stack.append("{")
                self._expect = "key_or_end"
            elif c == "[":
                self._emit(out, c)
                self._stack.append("[")
                self._expect = "value_or_end"
            elif c == '"':
                self._emit(out, c)
                self._in_string, self._key_string = True, False
            elif c in _LITERAL_START:
                self._emit(out, "")
                self._literal = c
            elif c == "]" and self._stack and self._stack[-1] == "[":
                self._end_container(c, out)
            else:
                raise _Broken
        elif expect in ("key_or_end", "key"):
            if c == '"':
                self._emit(out, c)
                self._in_string, self._key_string = True, True
            elif c == "}":
                self._end_container(c, out)
            else:
                raise _Broken
        elif expect == "colon":
            if c != ":":
                raise _Broken
            out.append(c)
            self._expect = "value"
        else:  # comma_or_end
            if c == ",":
                self._held = c
                self._expect = "key" if self._stack[-1] == "{" else "value"
            elif c == ("}" if self._stack[-1] == "{" else "]"):
                out.append(c)
                self._stack.pop()
                self._value_done()
            else:
                raise _Broken

    def _end_container(self, c: str, out: list[str]) -> None:
        if self._held:  # a trailing comma: never sent, now dropped
            self._held = ""
            self.repaired = True
        out.append(c)
        self._stack.pop()
        self._value_done()

    def _scan_string(self, text: str, i: int, out: list[str]) -> int:
        """Consume string characters from ``i``; returns where scanning goes on."""
        n = len(text)
        while i < n:
            if self._escape:
                c = text[i]
                if self._escape == "\\":
                    if c in _SIMPLE_ESCAPES:
                        out.append("\\" + c)
                        self._escape = ""
                        i += 1
                    elif c == "u":
                        self._escape = "\\u"
                        i += 1
                    else:  # not an escape JSON knows: the backslash was text
                        out.append("\\\\")
                        self._escape = ""
                        self.repaired = True
                    continue
                if c in _HEX:
                    self._escape += c
                    i += 1
                    if len(self._escape) == 6:
                        out.append(self._escape)
                        self._escape = ""
                    continue
                out.append("\\\\" + self._escape[1:])
                self._escape = ""
                self.repaired = True
                continue
            found = _STRING_SPECIAL.search(text, i)
            if found is None:
                out.append(text[i:])
                return n
            j = found.start()
            if j > i:
                out.append(text[i:j])
            c = text[j]
            i = j + 1
            if c == '"':
                out.append(c)
                self._in_string = False
                if self._key_string:
                    self._expect = "colon"
                else:
                    self._value_done()
                return i
            if c == "\\":
                self._escape = "\\"
            else:
                out.append(_CONTROL.get(c) or f"\\u{ord(c):04x}")
                self.repaired = True
        return n

    # -- closing -----------------------------------------------------------

    def _settle(self, out: list[str]) -> None:
        """Complete the innermost container's pending member so it may close."""
        expect = self._expect
        if expect == "colon":
            out.append(": null")
        elif expect == "value" and not self._held:
            out.append("null")  # a key with a colon and nothing after
        elif expect not in ("value", "key"):
            return
        self._held = ""
        self._expect = "comma_or_end"
        self.repaired = True

    def _close(self, depth: int, out: list[str]) -> None:
        """Complete the open token and close containers until ``depth`` remain."""
        if self._in_string:
            self._escape = ""  # half an escape sequence: dropped
            self._in_string = False
            out.append('"')
            self.repaired = True
            if self._key_string:
                self._expect = "colon"
            else:
                self._value_done()
        elif self._literal:
            if not _literal_complete(self._literal):
                self.repaired = True
            out.append(_literal_completed(self._literal))
            self._literal = ""
            self._value_done()
        while len(self._stack) > depth:
            self._settle(out)
            out.append("}" if self._stack.pop() == "{" else "]")
            self.repaired = True
            self._value_done()
        if self._stack:
            self._settle(out)

    def _salvage(self, out: list[str]) -> None:
        """The text broke the grammar: keep what parsed, add the whole text as a string."""
        if self._literal and not _literal_complete(self._literal):
            self._literal = "null"  # "t" before garbage says nothing about true
        self._close(1, out)
        separator = ", " if self._expect == "comma_or_end" else ""
        out.append(f'{separator}"{RAW_ARGUMENTS_KEY}": "' + _escape("".join(self._raw)))
        self._mode = "raw"
        self.repaired = self.broken = True


def parse_tool_arguments(arguments: Any) -> dict:
    """Non-stream ``arguments`` → the ``input`` object (never a string).

    Empty → ``{}``; a JSON object → it; a double-encoded JSON object string → the
    object; repairable into an object → the repair; anything else (a non-object, text
    that is not JSON) → ``{"_raw_arguments": "<text>"}``.
    """
    if isinstance(arguments, dict):
        return arguments
    if arguments is None:
        return {}
    if not isinstance(arguments, str):
        return {RAW_ARGUMENTS_KEY: orjson.dumps(arguments).decode()}
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        repaired = _repaired_object(arguments)
        return repaired if repaired is not None else {RAW_ARGUMENTS_KEY: arguments}
    if isinstance(value, str):  # double-encoded by some backends
        try:
            inner = orjson.loads(value)
        except orjson.JSONDecodeError:
            inner = None
        if isinstance(inner, dict):
            return inner
    if isinstance(value, dict):
        return value
    return {RAW_ARGUMENTS_KEY: arguments}


def _repaired_object(text: str) -> dict | None:
    if not text.lstrip().startswith("{"):
        return None  # prose or a bare value: repairing would invent structure
    stream = ToolArgumentsStream()
    repaired = stream.feed(text) + stream.finish()
    if not stream.broken:
        try:
            value = orjson.loads(repaired)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    try:
        value = json_repair.loads(text)
    except Exception:  # the library's failure modes are its own; the raw text remains
        return None
    return value if isinstance(value, dict) and value else None
