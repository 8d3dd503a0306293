"""List filters and orderings as Vertex AI accepts them (the AIP-160 subset its List calls document).

    state="JOB_STATE_SUCCEEDED" AND labels.team="vision"
    display_name="nightly*" OR display_name="weekly*"
    NOT state=JOB_STATE_FAILED  create_time>"2026-01-01T00:00:00Z"  labels.team:*

Comparisons are ``field op value`` with op one of ``= != < <= > >= :``; ``:`` means "has" (a map key, or a
substring; ``:*`` means present). Terms combine with AND, OR, NOT (or ``-``) and parentheses; as AIP-160
says, OR binds tighter than AND, and terms side by side mean AND. A value ending in ``*`` with ``=``
matches a prefix.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from bpj import errors

Predicate = Callable[[Any], bool]
_TOKEN = re.compile(
    r'\s*(?:(?P<op><=|>=|!=|=|<|>|:)|(?P<paren>[()])|"(?P<dq>(?:[^"\\]|\\.)*)"|\'(?P<sq>(?:[^\'\\]|\\.)*)\''
    r"|(?P<word>[^\s()=<>!:\"']+))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise errors.InvalidArgument(
                f"Unsupported filter {errors.shown(text)}: cannot read it at position {pos}"
            )
        pos = m.end()
        if m["op"]:
            out.append(("op", m["op"]))
        elif m["paren"]:
            out.append((m["paren"], m["paren"]))
        elif m["dq"] is not None or m["sq"] is not None:
            out.append(("str", m["dq"] if m["dq"] is not None else m["sq"]))
        else:
            out.append(("word", m["word"]))
    return out


MAX_DEPTH = 64  # parentheses and NOTs nested in one another; deeper is refused, not a RecursionError


class _Parser:
    def __init__(self, text: str, value_of: Callable[[Any, str], Any]) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0
        self.value_of = value_of

    def fail(self, why: str) -> errors.InvalidArgument:
        return errors.InvalidArgument(f"Unsupported filter {errors.shown(self.text)}: {why}")

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise self.fail("it ends too early")
        self.i += 1
        return tok

    def parse(self) -> Predicate:
        if not self.toks:
            return lambda r: True
        pred = self.conjunction()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return pred

    def conjunction(self) -> Predicate:
        terms = [self.disjunction()]
        while (tok := self.peek()) is not None and tok != (")", ")"):
            if tok == ("word", "AND"):
                self.take()
            terms.append(self.disjunction())
        return terms[0] if len(terms) == 1 else (lambda r: all(t(r) for t in terms))

    def disjunction(self) -> Predicate:
        terms = [self.factor()]
        while self.peek() == ("word", "OR"):
            self.take()
            terms.append(self.factor())
        return terms[0] if len(terms) == 1 else (lambda r: any(t(r) for t in terms))

    def factor(self) -> Predicate:
        tok = self.take()
        if tok in (("word", "NOT"), ("word", "-"), ("(", "(")):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"parentheses and NOTs nest deeper than {MAX_DEPTH}")
            if tok == ("(", "("):
                inner = self.conjunction()
                if self.take() != (")", ")"):
                    raise self.fail("a parenthesis is not closed")
            else:
                negated = self.factor()
                inner = lambda r: not negated(r)  # noqa: E731
            self.depth -= 1
            return inner
        if tok[0] != "word":
            raise self.fail(f"expected a field name, got {tok[1]!r}")
        field = tok[1].lstrip("-")
        negate = tok[1].startswith("-")
        kind, op = self.take()
        if kind != "op":
            raise self.fail(f"expected an operator after {field}, got {op!r}")
        vkind, value = self.take()
        if vkind not in ("str", "word"):
            raise self.fail(f"expected a value after {field}{op}")
        pred = self.comparison(field, op, value)
        return (lambda r: not pred(r)) if negate else pred

    def comparison(self, field: str, op: str, value: str) -> Predicate:
        value_of = self.value_of

        def test(resource: Any) -> bool:
            actual = value_of(resource, field)
            if op == ":":
                if isinstance(actual, dict):
                    return value == "*" or value in actual
                if actual is None:
                    return False
                return value == "*" or value in str(actual)
            if actual is None:
                return op == "!=" and value != ""
            return _compare(actual, op, value)

        return test


def _compare(actual: Any, op: str, value: str) -> bool:
    if isinstance(actual, datetime):
        other: Any = parse_time(value)
    elif isinstance(actual, bool):
        other = value.lower() == "true"
    elif isinstance(actual, (int, float)):
        try:
            other = float(value)
        except ValueError:
            return False
    else:
        actual, other = str(actual), value
        if op == "=" and other.endswith("*"):
            return fnmatch.fnmatchcase(actual, other)
    if op == "=":
        return bool(actual == other)
    if op == "!=":
        return bool(actual != other)
    return bool({"<": actual < other, "<=": actual <= other, ">": actual > other, ">=": actual >= other}[op])


def parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        raise errors.InvalidArgument(f"Unsupported filter: {text!r} is not an RFC 3339 time") from None


def compile_filter(text: str, value_of: Callable[[Any, str], Any]) -> Predicate:
    """A predicate over resources for ``text``; ``value_of(resource, "labels.team")`` reads a field."""
    return _Parser(text, value_of).parse()


def _key(key_of: Callable[[Any, str], Any], field: str, resource: Any) -> Any:
    return key_of(resource, field)


def compile_order(
    text: str, key_of: Callable[[Any, str], Any], allowed: tuple[str, ...]
) -> Callable[[list[Any]], list[Any]]:
    """A sort for ``order_by`` text such as ``"create_time desc, display_name"``."""
    keys: list[tuple[str, bool]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        words = part.split()
        if (
            words[0] not in allowed
            or len(words) > 2
            or (len(words) == 2 and words[1].lower() not in ("asc", "desc"))
        ):
            raise errors.InvalidArgument(
                f"Unsupported order_by {text!r}: order by {', '.join(allowed)}, each optionally followed by desc"
            )
        keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))

    def sort(items: list[Any]) -> list[Any]:
        for field, desc in reversed(keys):
            items = sorted(items, key=functools.partial(_key, key_of, field), reverse=desc)
        return items

    return sort
