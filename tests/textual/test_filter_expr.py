import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from textual.errors import InvalidMemoryError
from textual.filter_expr import All, AnyOf, Compare, FilterLimits, Not, Op, parse_filter, scalar_keys
from textual.memory import Memory, MemoryType, LifecycleTier

MEMORY = Memory(id="m1", tenant="t", user="alice", type=MemoryType.FACT, content="Alice likes Green Tea",
                created_at=1_700_000_000.0, updated_at=1_700_000_100.0, last_access_at=1_700_000_000.0,
                metadata={"topic": "drinks", "rating": 4, "tags": ["tea", "morning"], "place": {"city": "Oslo"},
                          "flag": True},
                importance=0.7, tier=LifecycleTier.WARM, agent="planner", run="r1")


def passes(tree) -> bool:
    return parse_filter(tree).matches(MEMORY)


@pytest.mark.parametrize("tree, expected", [
    ({"metadata.topic": {"eq": "drinks"}}, True),
    ({"metadata.topic": "drinks"}, True),  # shorthand for eq
    ({"metadata.topic": {"eq": "food"}}, False),
    ({"metadata.rating": {"eq": 4.0}}, True),  # 4 == 4.0
    ({"metadata.flag": {"eq": 1}}, False),  # true != 1
    ({"metadata.missing": {"eq": None}}, True),  # a missing field reads as null
    ({"agent_id": {"eq": "planner"}}, True),
    ({"space_id": {"eq": None}}, True),
])
def test_eq(tree, expected):
    assert passes(tree) is expected


@pytest.mark.parametrize("tree, expected", [
    ({"metadata.topic": {"ne": "food"}}, True),
    ({"metadata.topic": {"ne": "drinks"}}, False),
    ({"metadata.missing": {"ne": "x"}}, True),
    ({"run_id": {"ne": "r1"}}, False),
])
def test_ne(tree, expected):
    assert passes(tree) is expected


@pytest.mark.parametrize("tree, expected", [
    ({"metadata.topic": {"in": ["food", "drinks"]}}, True),
    ({"type": {"in": ["event", "preference"]}}, False),
    ({"tier": {"in": ["warm"]}}, True),
    ({"metadata.rating": {"in": ["4"]}}, False),  # no string-number coercion
])
def test_in(tree, expected):
    assert passes(tree) is expected


@pytest.mark.parametrize("op, value, expected", [
    ("gt", 1_699_999_999, True), ("gt", 1_700_000_000, False),
    ("gte", 1_700_000_000, True), ("gte", 1_700_000_001, False),
    ("lt", 1_700_000_001, True), ("lt", 1_700_000_000, False),
    ("lte", 1_700_000_000, True), ("lte", 1_699_999_999.5, False),
])
def test_order_operators_on_created_at(op, value, expected):
    assert passes({"created_at": {op: value}}) is expected


def test_order_operators_compare_only_like_kinds():
    assert passes({"metadata.rating": {"gte": 3}})
    assert not passes({"metadata.rating": {"gte": "3"}})  # a number is never compared with a string
    assert passes({"metadata.topic": {"lt": "e"}})  # strings compare as strings
    assert not passes({"metadata.missing": {"lt": 10}})
    assert passes({"importance": {"gt": 0.5, "lte": 0.7}})  # several operators on one field: all must hold


@pytest.mark.parametrize("tree, expected", [
    ({"content": {"contains": "green tea"}}, True),  # case-insensitive substring
    ({"content": {"contains": "coffee"}}, False),
    ({"content": {"contains": ".*"}}, False),  # a plain substring, never a pattern
    ({"metadata.tags": {"contains": "tea"}}, True),  # on a list: one element equals it
    ({"metadata.tags": {"contains": "te"}}, False),
    ({"metadata.place.city": {"contains": "os"}}, True),  # nested metadata keys
    ({"metadata.rating": {"contains": "4"}}, False),
])
def test_contains(tree, expected):
    assert passes(tree) is expected


def test_and_or_not():
    assert passes({"and": [{"metadata.topic": "drinks"}, {"created_at": {"gte": 1_700_000_000}}]})
    assert not passes({"and": [{"metadata.topic": "drinks"}, {"user_id": "bob"}]})
    assert passes({"or": [{"user_id": "bob"}, {"agent_id": "planner"}]})
    assert not passes({"or": [{"user_id": "bob"}, {"agent_id": "other"}]})
    assert passes({"not": {"user_id": "bob"}})
    assert not passes({"not": {"user_id": "alice"}})
    assert passes({"user_id": "alice", "run_id": "r1"})  # several keys: and


def test_parse_builds_a_typed_tree():
    tree = parse_filter({"or": [{"metadata.a": {"in": [1, 2]}}, {"not": {"type": "fact"}}]})
    assert tree == AnyOf((Compare(("metadata", "a"), Op.IN, scalar_keys([1, 2])),
                          Not(Compare(("type",), Op.EQ, "fact"))))
    assert isinstance(parse_filter({"user_id": "x", "run_id": "y"}), All)


@pytest.mark.parametrize("tree, field, words", [
    ({"and": [{"metadata.topic": {"eq": "x"}}, {"bogus": 1}]}, "filter.and[1].bogus", "unknown field"),
    ({"metadata.topic": {"like": "x"}}, "filter.metadata.topic.like", "unknown operator"),
    ({"metadata.topic": {"in": "x"}}, "filter.metadata.topic.in", "list of 1 to 100"),
    ({"metadata.topic": {"in": []}}, "filter.metadata.topic.in", "list of 1 to 100"),
    ({"metadata.topic": {"eq": {"x": 1}}}, "filter.metadata.topic.eq", "string, number, boolean or null"),
    ({"metadata.topic": {"in": ["a", ["b"]]}}, "filter.metadata.topic.in[1]", "string, number"),
    ({"created_at": {"gte": "yesterday"}}, "filter.created_at.gte", "holds numbers"),
    ({"type": {"eq": "note"}}, "filter.type.eq", "is not one of"),
    ({"content": {"contains": ""}}, "filter.content.contains", "non-empty string"),
    ({"metadata.topic": {"gt": None}}, "filter.metadata.topic.gt", "number or a string"),
    ({"and": []}, "filter.and", "non-empty list"),
    ({"or": {"user_id": "a"}}, "filter.or", "non-empty list"),
    ({"not": []}, "filter.not", "non-empty object"),
    ([], "filter", "non-empty object"),
    ({"metadata.": 1}, "filter.metadata.", "unknown field"),
    ({"metadata.topic": {}}, "filter.metadata.topic", "at least one operator"),
])
def test_bad_nodes_are_refused_naming_their_path(tree, field, words):
    with pytest.raises(InvalidMemoryError, match=words) as caught:
        parse_filter(tree)
    assert caught.value.field == field


def test_limits_bound_depth_nodes_lists_and_strings():
    deep = {"user_id": "a"}
    for _ in range(8):
        deep = {"not": deep}
    with pytest.raises(InvalidMemoryError, match="nest at most 8"):
        parse_filter(deep)
    with pytest.raises(InvalidMemoryError, match="at most 32 nodes"):
        parse_filter({"or": [{"user_id": str(i)} for i in range(100)]})
    with pytest.raises(InvalidMemoryError, match="list of 1 to 100"):
        parse_filter({"user_id": {"in": [str(i) for i in range(101)]}})
    with pytest.raises(InvalidMemoryError, match="at most 4 contains") as caught:
        parse_filter({"or": [{"content": {"contains": str(i)}} for i in range(5)]})
    assert caught.value.field == "filter.or[4].content.contains"
    with pytest.raises(InvalidMemoryError, match="at most 512 characters"):
        parse_filter({"content": {"contains": "x" * 513}})
    with pytest.raises(InvalidMemoryError, match="at most 256 characters"):
        parse_filter({"metadata." + "k" * 300: 1})
    small = FilterLimits(max_depth=2, max_nodes=3, max_in=2, max_string=4)
    assert parse_filter({"and": [{"user_id": "a"}, {"run_id": "b"}]}, small)
    with pytest.raises(InvalidMemoryError, match="at most 3 nodes"):
        parse_filter({"user_id": {"ne": "a", "in": ["b"], "contains": "c", "gt": "d"}}, small)


scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-5, 5, allow_nan=False),
                    st.text(max_size=4))


@given(actual=scalars, value=scalars)
def test_ne_is_the_negation_of_eq(actual, value):
    memory = dataclasses.replace(MEMORY, metadata={"k": actual})
    eq = parse_filter({"metadata.k": {"eq": value}}).matches(memory)
    assert parse_filter({"metadata.k": {"ne": value}}).matches(memory) is (not eq)
    assert parse_filter({"not": {"metadata.k": {"eq": value}}}).matches(memory) is (not eq)
    assert parse_filter({"metadata.k": {"in": [value]}}).matches(memory) is eq
    assert parse_filter({"metadata.k": {"in": [value, "other"]}}).matches(memory) is (eq or actual == "other")


@given(actual=st.one_of(st.integers(-9, 9), st.text(max_size=3)), value=st.one_of(st.integers(-9, 9),
                                                                                  st.text(max_size=3)))
def test_order_operators_agree(actual, value):
    memory = dataclasses.replace(MEMORY, metadata={"k": actual})
    result = {op: parse_filter({"metadata.k": {op: value}}).matches(memory) for op in ("gt", "gte", "lt", "lte")}
    if type(actual) is type(value):
        assert result["gte"] is (result["gt"] or actual == value)
        assert result["lt"] is (not result["gte"])
        assert result["lte"] is (not result["gt"])
    else:
        assert not any(result.values())


@given(parts=st.lists(st.sampled_from(["alice", "bob", "planner", "r1"]), min_size=1, max_size=5))
def test_and_or_are_all_and_any(parts):
    children = [{"or": [{"user_id": p}, {"agent_id": p}, {"run_id": p}]} for p in parts]
    single = [parse_filter(child).matches(MEMORY) for child in children]
    assert parse_filter({"and": children}).matches(MEMORY) is all(single)
    assert parse_filter({"or": children}).matches(MEMORY) is any(single)
