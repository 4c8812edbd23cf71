"""Metadata filters: parsing, the reference semantics on one item, and the columns agreeing with it."""

from __future__ import annotations

import numpy as np
import pytest

from tierserve.errors import InvalidInput
from tierserve.retrieval.columns import MetadataColumns
from tierserve.retrieval.filters import And, Compare, Exists, In, Or, flatten, matches, parse

ITEMS = [
    {"genre": "drama", "year": 2020, "rating": 7.5, "live": True, "author": {"name": "Ann"}},
    {"genre": "comedy", "year": 2021, "rating": 6, "live": False, "tags": ["a", "b"]},
    {"genre": "drama", "year": 2024, "author": {"name": "Bob"}},
    {"year": "2022", "rating": None},
    {},
    {"genre": "horror", "year": 2019.0, "rating": 8.25, "live": 1},
]


def test_equality_shorthand_and_operators_parse_to_a_tree() -> None:
    assert parse({"genre": "drama"}) == Compare("genre", "eq", "drama")
    assert parse({"year": {"$gte": 2020, "$lt": 2024}, "genre": {"$in": ["a", "b"]}}) == And(
        (Compare("year", "gte", 2020), Compare("year", "lt", 2024), In("genre", ("a", "b")))
    )
    assert parse({"$or": [{"a": 1}, {"b": {"$exists": False}}]}) == Or(
        (Compare("a", "eq", 1), Exists("b", False))
    )


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({}, "non-empty object"),
        ([], "non-empty object"),
        ({"year": {"$gt": "2020"}}, "needs a number"),
        ({"year": {"$gt": True}}, "needs a number"),
        ({"year": {"$between": [1, 2]}}, "unknown operator '$between'"),
        ({"$xor": []}, "unknown operator"),
        ({"genre": {"$in": []}}, "non-empty list"),
        ({"genre": {"$in": "drama"}}, "non-empty list"),
        ({"genre": None}, "not None"),
        ({"genre": [1]}, "not [1]"),
        ({"$and": {}}, "non-empty list"),
        ({"a": {"$exists": "yes"}}, "true or false"),
        ({"genre": {"$in": list(range(2000))}}, "more than 1024"),
        ({f"f{i}": i for i in range(300)}, "more than 256"),
    ],
)
def test_bad_filters_are_refused_with_a_clear_message(raw: object, words: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(raw)
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"genre": "drama"}, [0, 2]),
        ({"year": 2020.0}, [0]),  # rule 1: numbers by value
        ({"live": True}, [0]),  # rule 1: true is not 1
        ({"live": 1}, [5]),
        ({"genre": {"$ne": "drama"}}, [1, 3, 4, 5]),  # rule 2: items without the field match $ne
        ({"genre": {"$nin": ["drama", "comedy"]}}, [3, 4, 5]),
        ({"year": {"$gte": 2020, "$lt": 2024}}, [0, 1]),  # rule 3: "2022" is a string, not a number
        ({"rating": {"$gt": 7}}, [0, 5]),
        ({"author.name": "Bob"}, [2]),
        ({"$or": [{"genre": "horror"}, {"year": {"$lte": 2020}}]}, [0, 5]),
        ({"$not": {"genre": "drama"}}, [1, 3, 4, 5]),
        ({"rating": {"$exists": True}}, [0, 1, 5]),  # rule 4: null is not filterable
        ({"year": {"$in": [2019, "2022"]}}, [3, 5]),
    ],
)
def test_semantics_on_items_and_on_columns_agree(raw: object, expected: list[int]) -> None:
    node = parse(raw)
    assert [i for i, item in enumerate(ITEMS) if matches(node, flatten(item))] == expected
    columns = MetadataColumns(capacity=2)  # grows while filled
    for slot, item in enumerate(ITEMS):
        columns.set(slot, flatten(item))
    assert np.flatnonzero(columns.evaluate(node, len(ITEMS))).tolist() == expected


def test_columns_agree_with_the_reference_on_random_data() -> None:
    rng = np.random.default_rng(7)
    values: list[object] = ["red", "green", "blue", True, False, 0, 1, 2.5, 3, -1]
    items = [
        {f: values[rng.integers(len(values))] for f in ("a", "b", "c") if rng.random() < 0.8}
        for _ in range(400)
    ]
    columns = MetadataColumns(capacity=16)
    for slot, item in enumerate(items):
        columns.set(slot, flatten(item))
    ops = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"]
    for _ in range(300):
        field, op = ("a", "b", "c")[rng.integers(3)], ops[rng.integers(len(ops))]
        if op in ("$in", "$nin"):
            operand: object = [values[i] for i in rng.choice(len(values), 3, replace=False)]
        elif op == "$exists":
            operand = bool(rng.integers(2))
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            operand = float(rng.integers(-2, 4))
        else:
            operand = values[rng.integers(len(values))]
        node = parse({field: {op: operand}})
        reference = [i for i, item in enumerate(items) if matches(node, flatten(item))]
        assert np.flatnonzero(columns.evaluate(node, len(items))).tolist() == reference, (field, op, operand)


def test_cleared_slots_match_only_negations() -> None:
    columns = MetadataColumns()
    columns.set(0, {"a": "x"})
    columns.set(1, {"a": "x"})
    columns.clear(1)
    assert columns.evaluate(parse({"a": "x"}), 2).tolist() == [True, False]
    assert columns.evaluate(parse({"a": {"$ne": "x"}}), 2).tolist() == [False, True]


def test_unknown_fields_and_ranges_on_text_are_refused() -> None:
    columns = MetadataColumns()
    columns.set(0, {"genre": "drama"})
    columns.check(parse({"genre": "x"}))
    with pytest.raises(InvalidInput, match="no item in the collection has: \\['color'\\]"):
        columns.check(parse({"color": "red"}))
    with pytest.raises(InvalidInput, match="holds no numbers"):
        columns.check(parse({"genre": {"$gt": 1}}))
