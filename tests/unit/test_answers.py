from __future__ import annotations

import pytest

from spinegpt.eval_hooks.answers import parse_choices

OPTIONS = {
    "A": "Ankylosing spondylitis",
    "B": "Disc herniation",
    "C": "Spondylolisthesis",
    "D": "Scoliosis",
    "E": "Healthy",
}
LEVELS = {"A": "L1/L2", "B": "L2/L3", "C": "L3/L4", "D": "L4/L5", "E": "L5/S1"}

SINGLE = [
    ("B", ["B"]),
    ("  b  ", ["B"]),
    ("(B)", ["B"]),
    ("B.", ["B"]),
    ("B. Disc herniation", ["B"]),
    ("**C**", ["C"]),
    ("**C. Spondylolisthesis**", ["C"]),
    ("Answer: D", ["D"]),
    ("answer:D", ["D"]),
    ("The answer is E", ["E"]),
    ("The correct answer is (A).", ["A"]),
    ("Final answer: **B**", ["B"]),
    ("I would choose C because the slip is anterior.", ["C"]),
    ("\\boxed{A}", ["A"]),
    ("Reasoning... so the result is $\\boxed{D}$.", ["D"]),
    ("<answer>B</answer>", ["B"]),
    ("<think>A looks tempting, but B fits better? No, C.</think><answer>C</answer>", ["C"]),
    ("## Thinking\nOption A is unlikely; B and D do not explain the slip.\n## Final Response\nThe answer is C.", ["C"]),
    ("## Thinking\nA, B ruled out.\n\n## Final Response\n\nC. Spondylolisthesis", ["C"]),
    ("答案：C", ["C"]),
    ("答案是B", ["B"]),
    ("选C", ["C"]),
    ("综合分析，故选D。", ["D"]),
    ("选项A错误，选项B也不对。答案：E", ["E"]),
    ("A is wrong since there is no fusion. B is possible. After weighing, the answer is B.", ["B"]),
    ("Option A is unlikely. Option C fits the imaging. Therefore the correct option is C", ["C"]),
    ("Spondylolisthesis", ["C"]),  # restates the option text (needs options)
    ("The findings are most consistent with spondylolisthesis.", ["C"]),
    ("The answer is: Scoliosis", ["D"]),
]

UNPARSED = [
    "",
    "   ",
    "I am not sure.",
    "A 45-year-old with back pain needs an MRI.",  # 'A' is an article, not an option
    "The answer is A or B.",  # ambiguous
    "Answer: none of the above",
    "It could be disc herniation or scoliosis.",  # two option texts, no commitment
    "<answer>unclear</answer> but maybe B",  # marked answer names nothing: not guessed elsewhere
    "\\boxed{}",
]

MULTI = [
    ("B, D", ["B", "D"]),
    ("D and E", ["D", "E"]),
    ("The answers are D, E.", ["D", "E"]),
    ("L4/L5 and L5/S1", ["D", "E"]),
    ("The lesions are at L4/L5 and L5/S1.", ["D", "E"]),
    ("Answer: L5/S1", ["E"]),
    ("<answer>A, C</answer>", ["A", "C"]),
    ("答案：B、D", ["B", "D"]),
    ("E", ["E"]),
]


@pytest.mark.parametrize(("text", "expected"), SINGLE)
def test_single_answer_forms(text: str, expected: list[str]) -> None:
    assert parse_choices(text, options=OPTIONS) == expected


@pytest.mark.parametrize("text", UNPARSED)
def test_unparsed_or_ambiguous(text: str) -> None:
    assert parse_choices(text, options=OPTIONS) == []


@pytest.mark.parametrize(("text", "expected"), MULTI)
def test_multi_answer_lists(text: str, expected: list[str]) -> None:
    assert parse_choices(text, multi=True, options=LEVELS) == expected


def test_letters_outside_the_option_set_are_ignored() -> None:
    assert parse_choices("F", letters="ABCD") == []
    assert parse_choices("The answer is D", letters="ABCD") == ["D"]
    assert parse_choices("The answer is E", letters="ABCD") == []


def test_without_options_text_answers_are_unparsed() -> None:
    assert parse_choices("Spondylolisthesis") == []
    assert parse_choices("L4/L5 and L5/S1", multi=True) == []


def test_option_text_inside_a_longer_level_is_not_a_match() -> None:
    levels = {"A": "L5", "B": "L5/S1"}
    assert parse_choices("L5/S1", letters="AB", options=levels) == ["B"]
