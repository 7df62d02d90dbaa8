"""Reading tags from a response: the reference's lazy-regex results, in one linear pass."""

from __future__ import annotations

import ast
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rationanomaly.evaluate import tagged_answer
from rationanomaly.paths import PACKAGE_DIR
from rationanomaly.response import extract_answer, extract_think, tags_in_order
from rationanomaly.reward import compute_reward


def regex_last(text: str, tag: str, flags: int = re.DOTALL) -> str | None:
    """What the reference computes: the last match of `<tag>(.*?)</tag>` (quadratic on unclosed tags)."""
    found = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags)
    return found[-1].strip() if found else None


PIECES = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "<ANSWER>",
        "</Answer>",
        "<em>",
        "</em>",
        "<b>",
        "</b>",
        "<answer",
        "answer>",
        "</",
        "a",
        " ",
        "\n",
        "normal",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(PIECES, max_size=16).map("".join))
def test_tag_extraction_equals_the_lazy_regex_on_every_mix_of_tags(text):
    assert extract_answer(text) == regex_last(text, "answer")
    assert extract_think(text) == regex_last(text, "think")
    expected = next(
        (
            found
            for tag in ("answer", "em", "b")
            if (found := regex_last(text, tag, re.DOTALL | re.IGNORECASE)) is not None
        ),
        None,
    )
    assert tagged_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("<answer>a</answer><answer>b</answer>", "b"),  # the last block wins
        ("<answer><answer>x</answer>", "<answer>x"),  # an opening tag inside a block is content
        ("</answer><answer>x", None),  # never closed
        ("<answer> normal \n</answer>tail", "normal"),  # stripped, across newlines
    ],
)
def test_extract_answer_cases(text, answer):
    assert extract_answer(text) == answer


# 1 MB of unclosed tags: the lazy regex rescans from every one of them (minutes); one pass takes milliseconds.
# Not a timing assertion: the exact results are checked; benchmarks/tag_parsing.py prints the speeds.
UNCLOSED = {"<answer>": "<answer>" * 131_072, "<think>": "<think>" * 149_797, "<b>": "<b>" * 349_525}


@pytest.mark.parametrize("tag", UNCLOSED)
def test_a_megabyte_of_unclosed_tags_is_read_in_one_pass(tag):
    text = UNCLOSED[tag] + "</answer>"
    expected_answer = "<answer>" * 131_071 if tag == "<answer>" else None
    assert (extract_answer(text), extract_think(text)) == (expected_answer, None)
    assert tagged_answer(UNCLOSED[tag]) is None
    parts = compute_reward(text, "<think>x</think><answer>normal</answer>", ppl_model="none")
    assert (parts["format"], parts["answer"]) == (-1.0, pytest.approx(-1 / 0.15))


def test_tags_in_order_counts_each_tag_once():
    assert tags_in_order("<think>a</think><answer>b</answer>")
    assert not tags_in_order("<think>a</think><answer>b</answer></answer>")


def _regex_literals(tree: ast.AST) -> list[str]:
    """The string pieces of every pattern handed to a `re` function (compile, findall, finditer, ...)."""
    pieces = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.args
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
        ):
            pieces.append(
                "".join(
                    c.value for c in ast.walk(node.args[0]) if isinstance(c, ast.Constant) and isinstance(c.value, str)
                )
            )
    return pieces


def test_no_regex_in_the_package_scans_lazily_between_tags():
    """A `<tag>(.*?)</tag>` pattern anywhere in the package would bring the quadratic scan back."""
    offenders = [
        str(p.relative_to(PACKAGE_DIR))
        for p in PACKAGE_DIR.rglob("*.py")
        if any("(.*?)" in piece for piece in _regex_literals(ast.parse(p.read_text(encoding="utf-8"))))
    ]
    assert offenders == []
    assert any("(.*?)" in piece for piece in _regex_literals(ast.parse('re.findall(rf"<{t}>(.*?)</{t}>", x)')))
