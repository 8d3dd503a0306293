"""InstanceConfig, as the Vertex AI API reference describes it, compiled once for the instance readers.

instance_type     "object" | "array" | "" (the format's default: jsonl as each line is; csv and bigquery
                  as arrays in column order; tf-record and file-list as {"b64": ...} objects)
key_field         the field's value becomes the output "key" and is left out of what the model gets
included_fields   only these fields go to the model; for "array" their order is the array's order
excluded_fields   these fields do not go to the model (exclusive with included_fields)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bpj import errors

__all__ = ["BadInstance", "Shaper"]


class BadInstance(Exception):
    """One instance cannot be shaped; the message goes to the errors output."""


class Shaper:
    """InstanceConfig compiled once: turns raw instances into (payload, key)."""

    def __init__(
        self, instance_type: str, key_field: str, included: tuple[str, ...], excluded: tuple[str, ...]
    ) -> None:
        self.instance_type = instance_type
        self.key_field = key_field
        self.included = included
        self.excluded = excluded
        self.drop = frozenset(excluded) | ({key_field} if key_field else set())
        self.selects = bool(key_field or included or excluded)

    @classmethod
    def of(cls, config: Any, fmt: str) -> Shaper:
        kind = (config.instance_type if config is not None else "") or ""
        key = config.key_field if config is not None else ""
        inc = tuple(config.included_fields) if config is not None else ()
        exc = tuple(config.excluded_fields) if config is not None else ()
        if kind not in ("", "object", "array"):
            raise errors.InvalidArgument(
                f"instance_config.instance_type {kind!r} is not one of 'object', 'array' (or empty)"
            )
        if inc and exc:
            raise errors.InvalidArgument(
                "instance_config.included_fields and instance_config.excluded_fields are mutually exclusive"
            )
        for name, values in (("included_fields", inc), ("excluded_fields", exc)):
            if any(not v for v in values):
                raise errors.InvalidArgument(f"instance_config.{name} holds an empty field name")
            if len(set(values)) != len(values):
                raise errors.InvalidArgument(f"instance_config.{name} names a field twice")
        if fmt in ("tf-record", "tf-record-gzip", "file-list"):
            for name, value in (("key_field", key), ("included_fields", inc), ("excluded_fields", exc)):
                if value:
                    raise errors.InvalidArgument(
                        f"instance_config.{name} needs instances with fields (jsonl objects, csv, bigquery); "
                        f"{fmt} instances are {{'b64': ...}} objects"
                    )
            if kind == "array":
                raise errors.InvalidArgument(
                    f"instance_config.instance_type 'array' does not apply to {fmt} (its instances are objects)"
                )
        return cls(kind, key, inc, exc)

    def as_array(self, fmt: str) -> bool:
        if self.instance_type:
            return self.instance_type == "array"
        return fmt in ("csv", "bigquery")

    def shape_json(self, raw: Any) -> tuple[Any, Any]:
        """A JSONL instance: objects are selected from; other values pass through when nothing selects."""
        if isinstance(raw, dict):
            return self.shape_object(raw)
        if self.selects:
            raise BadInstance(
                "instance_config selects fields (key_field, included_fields or excluded_fields), "
                f"so every instance must be a JSON object, not {_json_kind(raw)}"
            )
        if self.instance_type == "object":
            raise BadInstance(f"instance_type is 'object' but the instance is {_json_kind(raw)}")
        if self.instance_type == "array" and not isinstance(raw, list):
            raise BadInstance(f"instance_type is 'array' but the instance is {_json_kind(raw)}")
        return raw, None

    def shape_object(self, raw: dict[str, Any]) -> tuple[Any, Any]:
        key = None
        if self.key_field:
            if self.key_field not in raw:
                raise BadInstance(f"the instance has no key_field {self.key_field!r}")
            key = raw[self.key_field]
        if self.instance_type == "array":
            if not self.included:
                raise BadInstance(
                    "instance_type 'array' needs instance_config.included_fields to order an object's fields"
                )
            return [raw.get(f) for f in self.included if f != self.key_field], key
        if self.included:
            return {f: raw[f] for f in self.included if f in raw and f != self.key_field}, key
        if self.drop:
            return {k: v for k, v in raw.items() if k not in self.drop}, key
        return raw, key

    def columns_plan(self, columns: Sequence[str], where: str) -> tuple[int | None, list[int]]:
        """For named columns (CSV header, table schema): the key's index and the payload's indices in order."""
        index = {c: i for i, c in enumerate(columns)}
        for f in (self.key_field, *self.included, *self.excluded):
            if f and f not in index:
                field = (
                    "key_field"
                    if f == self.key_field
                    else "included_fields"
                    if f in self.included
                    else "excluded_fields"
                )
                raise errors.InvalidArgument(
                    f"instance_config.{field} names {f!r}, which {where} does not have"
                )
        key = index[self.key_field] if self.key_field else None
        names = self.included or tuple(c for c in columns if c not in self.drop)
        return key, [index[c] for c in names if c != self.key_field]


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
