"""parse_choices on a corpus of answers written the way real models write them (tests/data/answer_corpus.jsonl):
HuatuoGPT's Thinking/Final Response, DeepSeek-R1's think tags and boxes, GPT-4o's markdown, Qwen-VL's short
replies, Chinese, multi-answer items, refusals and hedges. Each entry names the letters a careful reader takes
from it ([] when it commits to none)."""

from __future__ import annotations

import json
from pathlib import Path

from spinegpt.eval_hooks.answers import parse_choices

CORPUS = Path(__file__).parents[1] / "data" / "answer_corpus.jsonl"
OPTIONS = {
    "DX": {
        "A": "Ankylosing spondylitis",
        "B": "Lumbar disc herniation",
        "C": "Degenerative spondylolisthesis",
        "D": "Adolescent idiopathic scoliosis",
        "E": "Healthy",
    },
    "LV": {"A": "L1/L2", "B": "L2/L3", "C": "L3/L4", "D": "L4/L5", "E": "L5/S1"},
    "MG": {
        "A": "Observation and physiotherapy",
        "B": "Bracing",
        "C": "Posterior spinal fusion",
        "D": "Anterior release alone",
    },
    "ZH": {"A": "腰椎间盘突出症", "B": "腰椎管狭窄症", "C": "腰椎滑脱症", "D": "强直性脊柱炎", "E": "正常"},
}


def test_the_corpus_is_read_as_a_careful_reader_would() -> None:
    entries = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    assert len(entries) >= 150
    assert {e["style"] for e in entries} >= {"qwen-vl", "gpt-4o", "deepseek-r1", "huatuogpt", "zh", "multi"}
    misses = []
    for number, entry in enumerate(entries, 1):
        options = OPTIONS[entry["options"]]
        got = parse_choices(entry["text"], letters="".join(options), multi=entry["multi"], options=options)
        if got != entry["expected"]:
            misses.append(
                f"{CORPUS.name}:{number} [{entry['style']}] expected {entry['expected']}, got {got}: "
                f"{entry['text'][:100]!r}"
            )
    print(f"{len(entries) - len(misses)}/{len(entries)} read as expected", *misses, sep="\n")
    assert len(misses) <= 0.02 * len(entries), "\n".join(misses)
