"""Topic matching and filter containment, the ground the ACLs stand on.

`filter_within(f, p)` is what grants a wildcard subscription, so a False
positive leaks another device's messages. Besides the tables, it is checked
two ways: by sampling topics from `f` (containment must hold for each), and
exactly, by enumerating every topic shape that can tell the filters apart.
"""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thingshub.core.topics import filter_within, filters_overlap, topic_matches

# ---------------------------------------------------------------- topic_matches


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/b", "a", False),
        ("a", "a/b", False),
        ("a/+", "a/b", True),
        ("a/+", "a/", True),  # an empty level is still a level
        ("a/+", "a", False),
        ("a/+", "a/b/c", False),
        ("+/+", "a/b", True),
        ("+", "a", True),
        ("+", "", True),
        ("+", "/a", False),
        ("a/#", "a", True),  # "#" includes the parent level
        ("a/#", "a/b/c/d", True),
        ("a/#", "b/c", False),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("#", "$sys/p/d/x", True),  # no "$" rule here: ACL patterns are explicit
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("A/b", "a/b", False),  # case-sensitive
        ("$sys/p/d/#", "$sys/p/d/image/update", True),
        ("$sys/p/d/#", "$sys/p/dd/image/update", False),
        # a string with a wildcard is a filter, never a topic name
        ("a/+", "a/+", False),
        ("a/#", "a/#", False),
        ("#", "#", False),
        ("a/+", "a/b#", False),
    ],
)
def test_topic_matches(pattern: str, topic: str, expected: bool) -> None:
    """MQTT matching, level by level, where `#` also matches its parent level."""
    assert topic_matches(pattern, topic) is expected


# ---------------------------------------------------------------- filter_within


@pytest.mark.parametrize(
    ("topic_filter", "pattern", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/+", True),
        ("a/b", "a/#", True),
        ("a", "a/#", True),  # the parent level, which "a/#" matches
        ("a/+", "a/+", True),
        ("a/+", "a/#", True),
        ("a/+", "+/+", True),
        ("a/#", "a/#", True),
        ("a/b/#", "a/#", True),
        ("a/+/#", "a/#", True),
        ("#", "#", True),
        ("+/#", "#", True),
        ("a/+", "a/+/#", True),
        ("", "+", True),
        ("a/+", "a/b", False),  # "+" is wider than any fixed level
        ("a/#", "a/+", False),  # "#" also matches "a" and "a/b/c"
        ("a/#", "a/+/#", False),  # "a" itself is not under "a/+/#"
        ("a/#", "a", False),
        ("#", "a/#", False),
        ("+/#", "a/#", False),
        ("a", "a/+", False),
        ("a", "a/b/#", False),  # "#" covers only its own parent, not the grandparent
        ("a/b/c", "a/b", False),
        ("a/b", "a/b/c", False),
        ("a/c", "a/b", False),
        ("b/#", "a/#", False),
        ("$sys/p/d/#", "$sys/p/d/#", True),
        ("$sys/p/d/cmd/request/+", "$sys/p/d/#", True),
        ("$sys/p/+/#", "$sys/p/d/#", False),
        ("$sys/+/d/#", "$sys/p/d/#", False),
        ("#", "$sys/p/d/#", False),
        ("+/p/d/#", "$sys/p/d/#", False),
    ],
)
def test_filter_within(topic_filter: str, pattern: str, expected: bool) -> None:
    """Containment of the set of topics of `topic_filter` in that of `pattern`."""
    assert filter_within(topic_filter, pattern) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "+/b", True),
        ("a/#", "a", True),
        ("a/#", "b", False),
        ("a", "a/b", False),
        ("a/+", "a", False),
        ("#", "$sys/x", True),
        ("devices/command/response/+", "devices/command/+/+", True),
        ("devices/command/x/+", "devices/command/response/+", False),
    ],
)
def test_filters_overlap(a: str, b: str, expected: bool) -> None:
    """Whether some topic is matched by both; symmetric."""
    assert filters_overlap(a, b) is expected
    assert filters_overlap(b, a) is expected


# ---------------------------------------------------------------- strategies

#: A level of a generated topic: never a wildcard, sometimes a pattern's literal.
topic_levels = st.one_of(st.sampled_from(["a", "b", "", "$sys"]), st.text("xyz.$-", max_size=3))


@st.composite
def filters(draw: st.DrawFn, words: tuple[str, ...] = ("a", "b", "+")) -> str:
    """A valid filter: levels from `words`, and maybe a final `#`."""
    levels = draw(st.lists(st.sampled_from(words), max_size=4))
    if draw(st.booleans()) or not levels:
        levels.append("#")
    return "/".join(levels)


@st.composite
def topics_of(draw: st.DrawFn, topic_filter: str) -> str:
    """A topic the filter matches: `+` → any level, `#` → zero to three levels."""
    levels: list[str] = []
    for level in topic_filter.split("/"):
        if level == "+":
            levels.append(draw(topic_levels))
        elif level == "#":
            low = 0 if levels else 1  # "#" alone must still yield a topic of one level
            levels.extend(draw(st.lists(topic_levels, min_size=low, max_size=3)))
        else:
            levels.append(level)
    return "/".join(levels)


@given(data=st.data(), topic_filter=filters())
def test_generated_topics_match_their_filter(data: st.DataObject, topic_filter: str) -> None:
    """Sanity of the generator the next property relies on."""
    assert topic_matches(topic_filter, data.draw(topics_of(topic_filter)))


@given(data=st.data(), topic_filter=filters(), pattern=filters())
def test_within_means_every_topic_of_the_filter_matches_the_pattern(
    data: st.DataObject, topic_filter: str, pattern: str
) -> None:
    """Sampled soundness: filter_within(f, p) ⇒ each topic matching f matches p."""
    if filter_within(topic_filter, pattern):
        for _ in range(10):
            topic = data.draw(topics_of(topic_filter))
            assert topic_matches(pattern, topic), (topic_filter, pattern, topic)


# ---------------------------------------------------------------- exact check

FRESH = "z"  # a level equal to no literal of the filters below
MAX_LEVELS = 3
#: Extra levels a "#" must stand for to outrun any filter of MAX_LEVELS levels.
MAX_EXTRA = MAX_LEVELS + 1


@functools.cache
def all_topics_of(topic_filter: str) -> tuple[str, ...]:
    """Every topic of `topic_filter` over the levels {a, b, FRESH}, "#" up to MAX_EXTRA levels.

    Matching against filters whose literals are a and b depends only on which
    of a, b or "something else" each level is, and on the length; so this
    finite set holds a witness whenever any topic at all tells two filters apart.
    """
    choices = ("a", "b", FRESH)
    parts: list[list[tuple[str, ...]]] = []
    for level in topic_filter.split("/"):
        if level == "+":
            parts.append([(c,) for c in choices])
        elif level == "#":
            parts.append(
                [t for n in range(MAX_EXTRA + 1) for t in itertools.product(choices, repeat=n)]
            )
        else:
            parts.append([(level,)])
    topics = ("/".join(itertools.chain.from_iterable(combo)) for combo in itertools.product(*parts))
    return tuple(t for t in topics if t)  # a bare "#" with zero levels is no topic


SMALL_FILTERS = sorted(
    "/".join((*levels, last))
    for n in range(MAX_LEVELS)
    for levels in itertools.product(("a", "b", "+"), repeat=n)
    for last in ("a", "b", "+", "#")
)


def test_small_filters_cover_the_shapes() -> None:
    """The exhaustive checks below are only as good as this list."""
    assert len(SMALL_FILTERS) == 4 + 12 + 36
    assert {"#", "+/#", "a/+/#", "+/+/+", "a/b/#"} <= set(SMALL_FILTERS)
    assert set(all_topics_of("a/#")) >= {"a", "a/z", "a/b/a/z/b"}
    assert "" not in all_topics_of("#")


@pytest.mark.parametrize("pattern", SMALL_FILTERS)
def test_filter_within_is_exact_on_small_filters(pattern: str) -> None:
    """filter_within(f, p) is True exactly when no topic of f escapes p.

    True with an escaping topic would be a leak through the ACL; False with
    none would refuse a harmless subscription. One False of the second kind
    is known and accepted (next test).
    """
    for topic_filter in SMALL_FILTERS:
        if (topic_filter, pattern) == ("#", "+/#"):
            continue
        escaping = [t for t in all_topics_of(topic_filter) if not topic_matches(pattern, t)]
        assert filter_within(topic_filter, pattern) is (not escaping), (
            topic_filter,
            pattern,
            escaping[:3],
        )


def test_bare_hash_within_plus_hash_is_refused_conservatively() -> None:
    """`#` and `+/#` match the same topics, yet `#` is not judged within `+/#`.

    "#" is refused wherever the pattern fixes a level, since a "#" also
    matches its parent level; at the first level there is no parent, which
    the rule ignores. Harmless: no ACL pattern starts with `+/#`, and the
    error is a refusal, never a grant.
    """
    assert not any(not topic_matches("+/#", t) for t in all_topics_of("#"))
    assert not filter_within("#", "+/#")
    assert filter_within("+/#", "#")


@pytest.mark.parametrize("a", SMALL_FILTERS)
def test_filters_overlap_is_exact_on_small_filters(a: str) -> None:
    """filters_overlap(a, b) is True exactly when some topic matches both."""
    for b in SMALL_FILTERS:
        common = any(topic_matches(b, t) for t in all_topics_of(a))
        assert filters_overlap(a, b) is common, (a, b)
