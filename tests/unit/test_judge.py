"""The report judge against a real chat-completions server on loopback that misbehaves on purpose."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from spinegpt.eval_hooks.config import JudgeConfig
from spinegpt.eval_hooks.judge import Judge
from spinegpt.eval_hooks.rubric import DIMENSION_CRITERIA, DIMENSIONS, JudgeReplyError, parse_verdict, rubric_prompt

from ..judge_server import GOOD, JudgeServer


def judge(server: JudgeServer, tmp_path: Path | None = None, **kw: object) -> Judge:
    # A generous timeout: on a loaded 2-core CI machine a healthy reply can take well over half a second, and a
    # timed-out "good" reply would be retried (the slow-once case sleeps past this timeout on purpose).
    settings: dict[str, object] = {"timeout_s": 2.0, "backoff_s": 0.01, **kw}
    config = JudgeConfig(base_url=server.url, model="judge-x", **settings)  # type: ignore[arg-type]
    return Judge(config, cache_path=tmp_path / "cache.sqlite" if tmp_path else None)


def test_rubric_names_every_dimension_with_its_definition() -> None:
    prompt = rubric_prompt("Write a report for this MRI.", "L4/L5 herniation.", reference="Reference text")
    for dim in DIMENSIONS:
        assert f'"{dim}"' in prompt and DIMENSION_CRITERIA[dim] in prompt
    assert "Reference text" in prompt and "L4/L5 herniation." in prompt and "integer from 1" in prompt


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("not json", "no JSON object"),
        ('{"imaging_report": 5', "no JSON object"),
        ("[1, 2]", "not an object"),
        (json.dumps({"imaging_report": 5}), "missing dimension"),
        (json.dumps(GOOD | {"relevance": 6}), "not an integer 1-5"),
        (json.dumps(GOOD | {"relevance": 3.0}), "not an integer 1-5"),
        (json.dumps(GOOD | {"relevance": True}), "not an integer 1-5"),
        (json.dumps(GOOD | {"relevance": "4"}), "not an integer 1-5"),
    ],
)
def test_parse_verdict_is_strict(reply: str, error: str) -> None:
    with pytest.raises(JudgeReplyError, match=error):
        parse_verdict(reply)


def test_parse_verdict_accepts_fences_and_surrounding_text() -> None:
    assert parse_verdict("```json\n" + json.dumps(GOOD) + "\n```") == GOOD
    assert parse_verdict("Here you go: " + json.dumps(GOOD)) == GOOD


def test_retries_records_failures_and_never_invents_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINEGPT_JUDGE_API_KEY", "sk-test-secret")
    behaviours = [
        "good",
        "fenced",
        "malformed-once",
        "http500-once",
        "slow-once",
        "malformed",
        "missing",
        "float",
        "http500",
        "not-chat",
    ]
    with JudgeServer(slow_s=4.0) as server:
        j = judge(server, max_attempts=3, concurrency=3)
        results = j.judge_many([("Write a report.", f"report [[{b}]]", None) for b in behaviours])
    by = dict(zip(behaviours, results, strict=True))
    for ok in ("good", "fenced", "malformed-once", "http500-once", "slow-once"):
        assert by[ok].ok and by[ok].scores == GOOD, (ok, by[ok])
    assert by["good"].attempts == 1
    assert by["malformed-once"].attempts == 2 and "bad reply" in by["malformed-once"].errors[0]
    assert by["http500-once"].attempts == 2 and by["http500-once"].errors == ["HTTP 500"]
    assert by["slow-once"].attempts == 2 and "connection" in by["slow-once"].errors[0]
    for failed in ("malformed", "missing", "float", "http500", "not-chat"):
        assert by[failed].scores is None and by[failed].attempts == 3 and len(by[failed].errors) == 3, failed
    assert server.calls["malformed"] == 3 and server.calls["good"] == 1
    assert "missing dimension(s): granularity" in by["missing"].errors[-1]
    # The key is sent, bounded concurrency is respected, and the key appears in no result.
    assert set(server.auth) == {"Bearer sk-test-secret"}
    # The server also counts the slow-once request the client abandoned at its timeout (it sleeps on): +1.
    assert 1 < server.max_in_flight <= 3 + 1
    assert "sk-test-secret" not in json.dumps([r.to_json() for r in results])


def test_cache_makes_a_rerun_free(tmp_path: Path) -> None:
    items = [("Write a report.", f"report {i} [[good]]", None) for i in range(4)]
    with JudgeServer() as server:
        first = judge(server, tmp_path)
        results = first.judge_many(items)
        first.close()
        assert first.requests_sent == 4
        second = judge(server, tmp_path)
        again = second.judge_many(items)
        second.close()
    assert second.requests_sent == 0
    assert [r.scores for r in again] == [r.scores for r in results] and all(r.cached for r in again)
    assert server.calls["good"] == 4


def test_cache_key_depends_on_judge_model_and_answer(tmp_path: Path) -> None:
    with JudgeServer() as server:
        a = judge(server, tmp_path)
        a.judge_one("Write a report.", "answer one")
        a.judge_one("Write a report.", "answer two")
        a.close()
        b = Judge(JudgeConfig(base_url=server.url, model="another-judge"), cache_path=tmp_path / "cache.sqlite")
        b.judge_one("Write a report.", "answer one")
        b.close()
    assert a.requests_sent == 2 and b.requests_sent == 1


def test_unreachable_server_fails_every_attempt() -> None:
    config = JudgeConfig(base_url="http://127.0.0.1:9/v1", model="m", max_attempts=2, backoff_s=0.01, timeout_s=0.5)
    result = Judge(config).judge_one("p", "a")
    assert result.scores is None and result.attempts == 2 and all("connection" in e for e in result.errors)


def test_a_trickling_server_is_cut_off_at_the_total_deadline() -> None:
    """Each read of a trickling reply is quick, so a per-read timeout never fires; the request's total deadline does,
    and the judging phase as a whole is bounded too."""
    with JudgeServer() as server:
        j = judge(server, timeout_s=1.5, max_attempts=2)
        started = time.monotonic()
        result = j.judge_one("Write a report.", "report [[trickle]]")
        assert time.monotonic() - started < 8
        assert result.scores is None and result.attempts == 2
        assert all(e.startswith("connection: TimeoutError") for e in result.errors), result.errors
        bounded = judge(server, timeout_s=30, max_attempts=1, phase_timeout_s=1.0)
        started = time.monotonic()
        many = bounded.judge_many([("Write a report.", "report [[trickle]]", None), ("Write.", "fine", None)])
        assert time.monotonic() - started < 5
    assert many[0].scores is None and "judging phase exceeded 1s" in many[0].errors[0]
    assert many[1].scores == GOOD


def test_no_key_but_the_configured_one_is_ever_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-general-purpose")
    monkeypatch.delenv("SPINEGPT_JUDGE_API_KEY", raising=False)
    with JudgeServer() as server:
        judge(server).judge_one("Write a report.", "fine")
        monkeypatch.setenv("MY_JUDGE_KEY", "sk-judge-only")
        judge(server, api_key_env="MY_JUDGE_KEY").judge_one("Write a report.", "fine too")
    assert server.auth == ["Bearer EMPTY", "Bearer sk-judge-only"]
