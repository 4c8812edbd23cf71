"""Metadata filters: parsed once from JSON into a small tree, then evaluated on one item's metadata
(``matches``) or on a whole collection's columns at once (``tierserve.retrieval.columns``).

The language is MongoDB's, as Pinecone and Chroma use it::

    {"genre": "drama"}                                  equality (string, number or boolean)
    {"year": {"$gte": 2020, "$lt": 2024}}               ranges on numbers: $gt $gte $lt $lte
    {"genre": {"$in": ["drama", "comedy"]}}             $in, $nin; $eq, $ne; {"$exists": true}
    {"$or": [{"genre": "drama"}, {"year": 2020}]}       $and, $or (lists), $not (one filter)
    {"author.name": "Ann"}                              nested objects by dotted path

Several keys in one object must all hold. Rules, with examples:

1. Numbers compare by value across int and float (``1 == 1.0``); booleans are not numbers
   (``true`` does not equal ``1``); strings compare exactly.
2. ``$ne`` and ``$nin`` also match items that lack the field (as MongoDB does): ``{"a": {"$ne": 1}}``
   matches ``{}``. Every other operator needs the field.
3. Ranges take numbers only: ``{"year": {"$gt": "2020"}}`` is refused.
4. Lists and ``null`` in metadata are stored and returned but not filtered on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tierserve.errors import InvalidInput

MAX_FILTER_NODES = 256  # a filter is a query, not a data set: bounded
MAX_IN_VALUES = 1024

Scalar = str | int | float | bool
RANGES = ("gt", "gte", "lt", "lte")


@dataclass(frozen=True)
class Compare:
    field: str
    op: str  # eq, ne, gt, gte, lt, lte
    value: Scalar


@dataclass(frozen=True)
class In:
    field: str
    values: tuple[Scalar, ...]
    negate: bool = False  # $nin


@dataclass(frozen=True)
class Exists:
    field: str
    present: bool = True


@dataclass(frozen=True)
class And:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    part: Filter


Filter = Compare | In | Exists | And | Or | Not


def parse(raw: object) -> Filter:
    """The filter tree of a JSON filter, or InvalidInput saying what is wrong and where."""
    counter = [0]
    return _parse(raw, "filter", counter)


def _parse(raw: object, where: str, counter: list[int]) -> Filter:
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidInput(f"{where} must be a non-empty object of conditions")
    parts: list[Filter] = []
    for key, value in raw.items():
        counter[0] += 1
        if counter[0] > MAX_FILTER_NODES:
            raise InvalidInput(f"the filter has more than {MAX_FILTER_NODES} conditions")
        if key in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidInput(f"{where}.{key} must be a non-empty list of filters")
            children = tuple(_parse(v, f"{where}.{key}[{i}]", counter) for i, v in enumerate(value))
            parts.append(And(children) if key == "$and" else Or(children))
        elif key == "$not":
            parts.append(Not(_parse(value, f"{where}.$not", counter)))
        elif not isinstance(key, str) or not key or key.startswith("$"):
            raise InvalidInput(f"{where}: unknown operator or bad field name {key!r}")
        elif isinstance(value, Mapping):
            parts.extend(_field_ops(key, value, f"{where}.{key}"))
        else:
            parts.append(Compare(key, "eq", _scalar(value, f"{where}.{key}")))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def _field_ops(field: str, ops: Mapping[str, Any], where: str) -> list[Filter]:
    if not ops:
        raise InvalidInput(f"{where} must hold at least one operator")
    parts: list[Filter] = []
    for op, operand in ops.items():
        name = op[1:] if isinstance(op, str) and op.startswith("$") else None
        if name in ("eq", "ne"):
            parts.append(Compare(field, name, _scalar(operand, f"{where}.{op}")))
        elif name in RANGES:
            if isinstance(operand, bool) or not isinstance(operand, int | float) or operand != operand:
                raise InvalidInput(f"{where}.{op} needs a number, got {operand!r}")
            parts.append(Compare(field, name, operand))
        elif name in ("in", "nin"):
            if not isinstance(operand, list) or not operand:
                raise InvalidInput(f"{where}.{op} needs a non-empty list of values")
            if len(operand) > MAX_IN_VALUES:
                raise InvalidInput(f"{where}.{op} lists more than {MAX_IN_VALUES} values")
            values = tuple(_scalar(v, f"{where}.{op}[{i}]") for i, v in enumerate(operand))
            parts.append(In(field, values, negate=name == "nin"))
        elif name == "exists":
            if not isinstance(operand, bool):
                raise InvalidInput(f"{where}.$exists needs true or false")
            parts.append(Exists(field, operand))
        else:
            raise InvalidInput(
                f"{where}: unknown operator {op!r}; known: $eq $ne $gt $gte $lt $lte $in $nin $exists"
            )
    return parts


def _scalar(value: object, where: str) -> Scalar:
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return value
    raise InvalidInput(f"{where}: filters compare strings, numbers and booleans, not {value!r}")


def fields(node: Filter) -> set[str]:
    """Every field the filter names."""
    if isinstance(node, And | Or):
        return set().union(*(fields(p) for p in node.parts))
    if isinstance(node, Not):
        return fields(node.part)
    return {node.field}


def range_fields(node: Filter) -> set[str]:
    """The fields compared as numbers (gt, gte, lt, lte)."""
    if isinstance(node, And | Or):
        return set().union(*(range_fields(p) for p in node.parts))
    if isinstance(node, Not):
        return range_fields(node.part)
    return {node.field} if isinstance(node, Compare) and node.op in RANGES else set()


# -- one item -------------------------------------------------------------------------------------


def flatten(metadata: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """The filterable scalars of ``metadata`` by dotted path (rule 4: lists and null are left out)."""
    flat: dict[str, Scalar] = {}
    for key, value in metadata.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        elif isinstance(value, str | bool | int | float):
            flat[path] = value
    return flat


def kind_of(value: Scalar) -> str:
    """``num`` for numbers, ``bool`` and ``str`` for the rest (rule 1)."""
    if isinstance(value, bool):
        return "bool"
    return "str" if isinstance(value, str) else "num"


def same(a: Scalar, b: Scalar) -> bool:
    return kind_of(a) == kind_of(b) and a == b


def matches(node: Filter, flat: Mapping[str, Scalar]) -> bool:
    """Whether one item's flattened metadata satisfies the filter (the reference semantics)."""
    if isinstance(node, And):
        return all(matches(p, flat) for p in node.parts)
    if isinstance(node, Or):
        return any(matches(p, flat) for p in node.parts)
    if isinstance(node, Not):
        return not matches(node.part, flat)
    if isinstance(node, Exists):
        return (node.field in flat) is node.present
    present = node.field in flat
    value = flat.get(node.field)
    if isinstance(node, In):
        found = present and any(same(value, v) for v in node.values)  # type: ignore[arg-type]
        return not found if node.negate else found
    if node.op == "eq":
        return present and same(value, node.value)  # type: ignore[arg-type]
    if node.op == "ne":
        return not (present and same(value, node.value))  # type: ignore[arg-type]
    if not present or kind_of(value) != "num":  # type: ignore[arg-type]
        return False
    number = float(value)  # type: ignore[arg-type]
    bound = float(node.value)
    return {"gt": number > bound, "gte": number >= bound, "lt": number < bound, "lte": number <= bound}[
        node.op
    ]
