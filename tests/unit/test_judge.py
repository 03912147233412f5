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
        # Five failing kinds on purpose: the circuit breaker is set past them (it has a test of its own below).
        j = judge(server, max_attempts=3, concurrency=3, max_consecutive_failures=10)
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


# -- a judge at its worst (issue 23): failing every request, replying without end, a tampered cache ------------------


def test_a_judge_that_fails_every_request_is_given_up_after_a_few(caplog: pytest.LogCaptureFixture) -> None:
    """Before: every report went through all its attempts (an hour of a dead judge at defaults). After a few reports
    in a row fail, the rest are recorded as failed at once, saying why."""
    items = [("Write a report.", f"report {i} [[http500]]", None) for i in range(20)]
    with JudgeServer() as server:
        j = judge(server, max_attempts=2, concurrency=2, max_consecutive_failures=3)
        results = j.judge_many(items)
        j.close()
    assert all(r.scores is None for r in results)
    assert server.calls["http500"] <= (3 + 2) * 2, server.calls  # the breaker's 3, and those already in flight
    given_up = [r for r in results if r.attempts == 0]
    assert len(given_up) >= 20 - 5 and all("3 requests in a row" in r.errors[0] for r in given_up), given_up[0]
    assert "HTTP 500" in given_up[0].errors[0] and "max_consecutive_failures" in given_up[0].errors[0]


def test_a_reply_without_end_is_cut_off_at_its_size_bound() -> None:
    from spinegpt.eval_hooks.llm_client import ChatClient, Server

    with JudgeServer() as server:
        client = ChatClient(Server(server.url, "m", "NO_SUCH_KEY", 60.0, 1, 0.0, max_reply_bytes=1 << 20))
        started = time.monotonic()
        outcome = client.ask("system", "[[endless]]", lambda text: text)
        client.close()
    assert time.monotonic() - started < 20, "cut off by size, not by the 60 s deadline"
    assert outcome.value is None and "larger than 1 MiB" in outcome.errors[0], outcome.errors


def _tamper(database: Path, value: object) -> int:
    import sqlite3

    with sqlite3.connect(database) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return sum(db.execute(f"UPDATE {t} SET value = ?", (json.dumps(value),)).rowcount for t in tables)


def test_a_tampered_verdict_cache_is_asked_again_never_scored(tmp_path: Path) -> None:
    """Before: whatever the cache held became the score, where the live path would have refused it."""
    with JudgeServer() as server:
        first = judge(server, tmp_path)
        assert first.judge_one("Write a report.", "a report").scores == GOOD
        first.close()
        for tampered in (GOOD | {"coverage": 9}, json.dumps(GOOD | {"coverage": 9}), "not json", [1, 2], None):
            assert _tamper(tmp_path / "cache.sqlite", tampered) == 1
            again = judge(server, tmp_path)
            result = again.judge_one("Write a report.", "a report")
            again.close()
            assert result.scores == GOOD and not result.cached and again.requests_sent == 1, tampered
        (tmp_path / "cache.sqlite").write_bytes(b"a damaged file" * 300)
        after = judge(server, tmp_path)
        assert after.judge_one("Write a report.", "a report").scores == GOOD
        after.close()


def test_the_extractor_checks_its_cache_and_gives_up_on_a_dead_server(tmp_path: Path) -> None:
    from spinegpt.eval_hooks.extractor import Extractor, Request
    from spinegpt.eval_hooks.llm_client import Server

    options = {"A": "L4-L5", "B": "L5-S1", "C": "C5-C6", "D": "T12-L1"}
    with JudgeServer() as server:
        settings = Server(server.url, "x", "NO_SUCH_KEY", 5.0, 2, 0.01)
        first = Extractor(settings, cache_path=tmp_path / "x.sqlite")
        asked = Request("Which level?", options, "Probably the lower one [[letters-b]]", multi=False)
        assert first.extract(asked).value == ["B"]
        first.close()
        assert _tamper(tmp_path / "x.sqlite", ["Z"]) == 1  # a letter that is no option
        again = Extractor(settings, cache_path=tmp_path / "x.sqlite")
        outcome = again.extract(asked)
        again.close()
        assert outcome.value == ["B"] and not outcome.cached and again.requests_sent == 1
        dead = Extractor(settings, concurrency=1, max_consecutive_failures=2)
        failed = dead.extract_many([Request("Which?", options, f"answer {i} [[http500]]", False) for i in range(10)])
        dead.close()
    assert all(o.value is None for o in failed) and dead.requests_sent == 2 * 2
    assert "2 requests in a row" in failed[-1].errors[0]


def test_a_cached_teacher_completion_must_look_like_one() -> None:
    from spinegpt.eval_hooks.llm_client import Completion

    fresh = Completion("a chain", "thinking", "stop", 10, 20).to_json()
    assert Completion.valid_json(fresh) and Completion.from_json(fresh).content == "a chain"
    for bad in ({**fresh, "content": 3}, {**fresh, "prompt_tokens": -1}, {**fresh, "reasoning": []}, "text", None):
        assert not Completion.valid_json(bad), bad
