"""Label and field selectors, parsed from query strings and matched against objects."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import bad_request

_SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s+\((.*)\)\Z")
_EQ_RE = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)\Z")
_KEY_RE = re.compile(r"^(!)?\s*([^=!\s(),]+)\Z")


@dataclass(frozen=True)
class Requirement:
    """One term of a label selector: `key op values`."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside a parenthesised value set."""
    terms, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    terms.append("".join(current).strip())
    return [t for t in terms if t]


def _parse_term(term: str) -> Requirement:
    if match := _SET_RE.match(term):
        key, op, values = match.groups()
        return Requirement(key, op, tuple(v.strip() for v in values.split(",") if v.strip()))
    if match := _EQ_RE.match(term):
        key, op, value = match.groups()
        return Requirement(key, "!=" if op == "!=" else "=", (value,))
    if match := _KEY_RE.match(term):
        negated, key = match.groups()
        return Requirement(key, "!" if negated else "exists")
    raise bad_request(f"unable to parse requirement: {term!r}")


def parse_label_selector(text: str | None) -> list[Requirement]:
    return [_parse_term(t) for t in _split_terms(text or "")]


def labels_match(requirements: list[Requirement], obj: dict[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(text: str | None) -> list[tuple[str, bool, str]]:
    """Terms of `path=value`, `path==value`, `path!=value` as (path, equal, value)."""
    terms = []
    for term in _split_terms(text or ""):
        match = _EQ_RE.match(term)
        if not match:
            raise bad_request(f"invalid field selector: {term!r}")
        path, op, value = match.groups()
        terms.append((path, op != "!=", value))
    return terms


def fields_match(terms: list[tuple[str, bool, str]], obj: dict[str, Any]) -> bool:
    return all((_field_value(obj, path) == value) == equal for path, equal, value in terms)


def build_filter(
    namespace: str | None, label_selector: str | None, field_selector: str | None
) -> Callable[[dict[str, Any]], bool]:
    """One predicate for a list/watch request: namespace, labels and fields."""
    requirements = parse_label_selector(label_selector)
    terms = parse_field_selector(field_selector)

    def matches(obj: dict[str, Any]) -> bool:
        if namespace is not None and obj.get("metadata", {}).get("namespace") != namespace:
            return False
        return labels_match(requirements, obj) and fields_match(terms, obj)

    return matches
