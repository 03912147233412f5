"""`spinegpt data distill` against a loopback teacher that answers right, wrong, hedged, truncated, malformed, slow,
with HTTP 500 and in loops: what is kept, what is rejected and why, what survives a kill, and when the run stops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spinegpt.data_mixes import chains, distill, readers, sources
from spinegpt.data_mixes.chains import Question
from spinegpt.data_mixes.distill import DistillError, DistillSettings, DistillStopped, Selection, Teacher
from spinegpt.data_mixes.mixes import Filters
from spinegpt.data_mixes.records import Record
from spinegpt.eval_hooks.llm_client import ChatClient, CircuitBreaker, CircuitOpen, Completion, Server
from spinegpt.offline import smoke_images

from ..conftest import build_mix
from ..teacher_server import OPTIONS, REASONING, TeacherServer, item, lines, mcq, open_item, results, write_bank


@pytest.fixture(autouse=True)
def _own_reply_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test its own reply cache: what a test counts as asked must not come from another test's replies."""
    monkeypatch.setenv("SPINEGPT_CACHE", str(tmp_path / "cache"))


def settings(server: TeacherServer, **kw: Any) -> DistillSettings:
    teacher = {"base_url": server.url, "model": "teacher-x", "timeout_s": 2.0, "backoff_s": 0.01, "max_attempts": 2}
    teacher.update(kw.pop("teacher", {}))
    return DistillSettings(teacher=Teacher(**teacher), **kw)


def run(bank: Path, out: Path, config: DistillSettings) -> dict[str, Any]:
    return distill.distill(config, distill.source_input(str(bank), None, None), out).manifest


def assert_counts_add_up(manifest: dict[str, Any]) -> None:
    counts = manifest["counts"]
    assert counts["generated"] == counts["kept"] + sum(counts["rejected"].values())
    assert counts["done"] + counts["pending"] == counts["wanted"] == counts["selected"] * counts["samples"]
    assert set(counts["rejected"]) <= set(chains.REJECTIONS)


# -- the checks of one reply ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "reasoning", "answer"),
    [
        (Completion(f"## Thinking\n\n{REASONING}\n\n## Final Response\n\nC. L4/L5"), REASONING, "C. L4/L5"),
        (Completion(f"{REASONING}\n\n**Final answer:** C"), REASONING, "C"),
        (Completion(f"<think>{REASONING}</think>\n\nThe answer is C."), REASONING, "The answer is C."),
        (Completion("C", reasoning=REASONING), REASONING, "C"),
        (Completion("Because of the level, C."), "", "Because of the level, C."),
        (Completion(f"## 思考\n\n{REASONING}\n\n最终答案：C"), REASONING, "C"),
    ],
)
def test_chain_and_answer_are_separated_in_every_layout(completion: Completion, reasoning: str, answer: str) -> None:
    found = chains.separate(completion)
    assert found == (reasoning, answer) or (found[1] == answer and reasoning in found[0])


def test_repetition_is_a_loop_not_a_restated_fact() -> None:
    assert chains.repetition("the cord is compressed at this level and " * 8) is not None
    assert chains.repetition("椎管狭窄压迫神经根。" * 10) is not None
    sound = " ".join(
        f"Option {c} fits level {n} poorly because the history points elsewhere."
        for c, n in zip("ABCDE", range(5), strict=True)
    )
    assert chains.repetition(sound + " " + REASONING * 2) is None


def test_the_first_failing_check_names_the_rejection() -> None:
    cut = Completion("## Thinking\nthe cord is compressed " * 20, finish_reason="length", completion_tokens=4096)
    assert chains.check_reply(cut, 40).reason == "truncated"  # cut at the limit, even though it also loops
    assert chains.check_reply(Completion(""), 40).reason == "empty reply"
    assert chains.check_reply(Completion("C"), 40).reason == "no separable reasoning"
    assert chains.check_reply(Completion("## Thinking\nshort\n## Final Response\nC"), 40).reason == (
        "no separable reasoning"
    )
    assert chains.check_reply(Completion(f"{REASONING}\n## Final Response\n"), 40).reason == "no answer"
    ok = chains.check_reply(Completion(f"{REASONING}\n## Final Response\nC"), 40)
    assert ok.reason is None and ok.answer == "C" and ok.reasoning == REASONING


def test_a_multiple_choice_answer_must_read_exactly_the_key() -> None:
    options = chains.options_of(f"Which level?\n{OPTIONS}")
    assert list(options) == ["A", "B", "C", "D"] and options["C"] == "L4/L5"
    one = Question("mcq", [], [], "C", ["C"], options)
    assert chains.verify_choice(one, "C. L4/L5 is the most common level.")[0] is None
    assert chains.verify_choice(one, "L4/L5")[0] is None  # the option's text reads as its letter
    assert chains.verify_choice(one, "B")[:2] == ("wrong answer", "read B, the key is C")
    assert chains.verify_choice(one, "A or C")[0] == "no answer"  # a hedge is never a pass
    assert chains.verify_choice(one, "It depends on the patient.")[0] == "no answer"
    two = Question("mcq", [], [], "B, D", ["B", "D"], options)
    assert chains.verify_choice(two, "Options B and D are correct.")[0] is None
    assert chains.verify_choice(two, "B")[0] == "wrong answer"  # exactly the key: a subset is wrong
    assert chains.mcq_key("Which level? (no options)", "C") == "no options"
    assert chains.mcq_key(f"Which?\n{OPTIONS}", "I am not sure.") == "no answer key"
    assert chains.mcq_key(f"Which?\n{OPTIONS}", "C. L4/L5") == (options, ["C"])


def test_agreement_verdicts_are_strict() -> None:
    assert chains.parse_agreement('```json\n{"agrees": true}\n```') is True
    assert chains.parse_agreement('Verdict: {"agrees": false}') is False
    for bad in ('{"agrees": "yes"}', "yes", '{"agree": true}', "[true]"):
        with pytest.raises(ValueError, match="agrees"):
            chains.parse_agreement(bad)


def test_template_needs_the_question_once() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        chains.check_template("Answer step by step.", "t.txt")
    with pytest.raises(ValueError, match="found 2 times"):
        chains.check_template("{question} {question}", "t.txt")


def test_images_go_as_data_urls_where_their_tags_stand_and_the_cache_key_holds_their_hash(tmp_path: Path) -> None:
    image = smoke_images.write_image("mri-sagittal-L4.png", tmp_path)
    question = Question("open", [{"role": "user", "content": "<image>What is marked?"}], [str(image)], "L4")
    sent, keyed = chains.request_messages(question, "Q: {question}")
    parts = sent[0]["content"]
    assert parts[0]["type"] == "text" and parts[0]["text"] == "Q: "
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[2] == {"type": "text", "text": "What is marked?"}
    assert keyed[0]["content"][1]["type"] == "image" and len(keyed[0]["content"][1]["sha256"]) == 64
    assert "base64" not in json.dumps(keyed)


# -- the circuit breaker (eval_hooks/llm_client.py) ----------------------------------------------------------------


def test_circuit_breaker_opens_after_consecutive_failed_requests_and_refuses_more() -> None:
    with TeacherServer() as server:
        breaker = CircuitBreaker(2, "teacher")
        client = ChatClient(Server(server.url, "m", "NO_SUCH_VAR", 2.0, 2, 0.0), breaker=breaker)
        ask = [{"role": "user", "content": "[[answer-C]]"}]
        assert client.chat(ask, lambda c: c).value is not None
        server.fail_all = True
        assert client.chat(ask, lambda c: c).value is None  # one failed request (two attempts): still closed
        assert breaker.reason is None
        server.fail_all = False
        assert client.chat(ask, lambda c: c).value is not None  # a reply resets the count
        server.fail_all = True
        client.chat(ask, lambda c: c)
        client.chat(ask, lambda c: c)
        assert breaker.reason is not None and "failed 2 requests in a row" in breaker.reason
        assert "HTTP 500" in breaker.reason
        sent = server.teacher_calls()
        server.fail_all = False
        with pytest.raises(CircuitOpen):
            client.chat(ask, lambda c: c)
        assert server.teacher_calls() == sent  # refused without a request
        plain = ChatClient(Server(server.url, "m", "NO_SUCH_VAR", 2.0, 1, 0.0))
        assert plain.breaker is None  # opt-in: the judge and extractor keep their behaviour


# -- whole runs -------------------------------------------------------------------------------------------------------


BEHAVIOURS = {
    "q0": ("answer-C", "kept"),
    "q1": ("think-C", "kept"),
    "q2": ("field-C", "kept"),
    "q3": ("answer-B", "wrong answer"),
    "q4": ("hedge", "no answer"),
    "q5": ("truncated", "truncated"),
    "q6": ("repeat", "repetition"),
    "q7": ("noreason", "no separable reasoning"),
    "q8": ("empty", "empty reply"),
    "q9": ("malformed-once", "kept"),
    "q10": ("http500-once", "kept"),
    "q11": ("slow-once", "kept"),
    "q12": ("malformed", None),  # no reply at all: failed, retried by a rerun
    "q13": ("http500", None),
    "q14": ("slow", None),
}


def test_every_reply_is_verified_and_every_rejection_has_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-general-purpose")  # must never reach the teacher
    items = [mcq(int(k[1:]), behaviour) for k, (behaviour, _) in BEHAVIOURS.items()]
    items += [open_item(0), open_item(1, "disagree")]
    bank = write_bank(tmp_path / "bank.jsonl", items)
    out = tmp_path / "out"
    with TeacherServer(slow_s=3.0) as server:
        manifest = run(bank, out, settings(server, teacher_judges=True, teacher={"concurrency": 4}))
    found = results(out)
    for source_id, (_, expected) in BEHAVIOURS.items():
        assert found.get(f"{source_id}-cot0") == expected, source_id
    assert found["o0-cot0"] == "kept" and found["o1-cot0"] == "disagrees with reference"
    assert_counts_add_up(manifest)
    counts, this_run = manifest["counts"], manifest["this_run"]
    assert counts["kept"] == 7 and counts["pending"] == 3 and this_run["failed"] == {"teacher": 3}
    assert counts["rejected"] == {
        "truncated": 1,
        "empty reply": 1,
        "repetition": 1,
        "no separable reasoning": 1,
        "no answer": 1,
        "wrong answer": 1,
        "disagrees with reference": 1,
    }
    # 17 items: 3 answered at the second try, 3 failing both tries
    assert this_run["requests"] == server.teacher_calls() == 17 + 3 + 3
    assert this_run["retries"] == 6 and this_run["judge_requests"] == 2
    # Tokens of the replies that came (neither a malformed body nor one past its deadline counts)
    assert this_run["prompt_tokens"] == 50 * 14 and this_run["completion_tokens"] == 40 * 14
    assert server.max_in_flight <= 4
    assert {a for a in server.auth} == {"Bearer EMPTY"}  # no key configured: none sent, OPENAI_API_KEY never

    kept = {line["id"]: line for line in lines(out / distill.CHAINS)}
    chain = kept["q0-cot0"]
    assert chain["task"] == "reasoning" and chain["reasoning"] == REASONING
    assert chain["messages"][:2] == items[0]["messages"][:2]  # the question as the item has it, not the template
    assert chain["messages"][2] == {"role": "assistant", "content": "C"}
    provenance = chain["provenance"]
    assert provenance["source_type"] == "textbook" and provenance["book"] == "Spine Surgery, 3rd ed."
    assert (provenance["source_file"], provenance["source_line"], provenance["source_id"]) == (str(bank), 1, "q0")
    assert provenance["teacher"] == "teacher-x" and provenance["sample"] == 0
    assert provenance["prompt_sha256"] == chains.template_hash(chains.DEFAULT_TEMPLATE) == manifest["prompt"]["sha256"]
    assert provenance["verdict"] == {"method": "answer_rules", "key": ["C"], "read": ["C"]}
    assert kept["o0-cot0"]["provenance"]["verdict"] == {"method": "teacher", "judge": "teacher-x", "agrees": True}
    rejected = {line["id"]: line for line in lines(out / distill.REJECTED)}
    assert rejected["q3-cot0"]["detail"] == "read B, the key is C" and rejected["q3-cot0"]["reply"]["content"]
    sent = server.bodies[0]
    assert sent["max_tokens"] == 4096 and sent["temperature"] == 0.7

    # The chains file is SpineMed: the reader takes it, the chain rendered into the answer.
    records = list(sources.read("spinemed", out / distill.CHAINS, readers.ReadOptions()))
    assert all(isinstance(r, Record) for r in records) and len(records) == 7
    first = next(r for r in records if isinstance(r, Record) and r.id == "q0-cot0")
    assert first.task == "reasoning" and first.messages[-1]["content"].startswith("## Thinking\n\n" + REASONING)


def test_open_ended_items_without_a_judge_are_refused_before_any_request(tmp_path: Path) -> None:
    bank = write_bank(tmp_path / "bank.jsonl", [mcq(0, "answer-C"), open_item(0)])
    with TeacherServer() as server:
        with pytest.raises(DistillError, match=r"1 open-ended item\(s\) selected \(open_qa\).*never kept unverified"):
            run(bank, tmp_path / "out", settings(server))
        assert server.teacher_calls() == 0 and not (tmp_path / "out").exists()
        only_mcq = settings(server, selection=Selection(filters=Filters(task=["mcq"])))
        assert run(bank, tmp_path / "out", only_mcq)["counts"]["kept"] == 1


def test_a_separate_judge_decides_agreement_and_its_failure_is_not_a_verdict(tmp_path: Path) -> None:
    from spinegpt.eval_hooks.config import JudgeConfig

    bank = write_bank(tmp_path / "bank.jsonl", [open_item(0), open_item(1, "disagree")])
    with TeacherServer() as teacher, TeacherServer() as judge_server:
        judge = JudgeConfig(base_url=judge_server.url, model="judge-y", timeout_s=2.0, backoff_s=0.01, max_attempts=2)
        judge_server.judge_fail = True
        manifest = run(bank, tmp_path / "out", settings(teacher, judge=judge, cache=False))
        assert manifest["this_run"]["failed"] == {"judge": 2} and manifest["counts"]["pending"] == 2
        assert judge_server.calls["judge:open"] == 2 and teacher.calls.get("judge:open", 0) == 0
        judge_server.judge_fail = False
        manifest = run(bank, tmp_path / "out", settings(teacher, judge=judge, cache=False))
    assert results(tmp_path / "out") == {"o0-cot0": "kept", "o1-cot0": "disagrees with reference"}
    chain = lines(tmp_path / "out" / distill.CHAINS)[0]
    assert chain["provenance"]["verdict"] == {"method": "judge", "judge": "judge-y", "agrees": True}
    assert manifest["counts"]["pending"] == 0 and manifest["totals"]["runs"] == 2


def test_killed_mid_run_and_rerun_gives_no_duplicate_and_no_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [mcq(i, "answer-C" if i % 3 else "answer-B") for i in range(12)]
    bank = write_bank(tmp_path / "bank.jsonl", items)
    out = tmp_path / "out"
    config = settings(server := TeacherServer(), cache=False, teacher={"concurrency": 3, "samples": 2})
    appended = 0
    real_append = distill._Journal.append

    def dying_append(self: distill._Journal, obj: dict[str, Any]) -> None:
        nonlocal appended
        appended += 1
        if appended == 9:
            raise KeyboardInterrupt  # the process is stopped between two results
        real_append(self, obj)

    with server:
        monkeypatch.setattr(distill._Journal, "append", dying_append)
        with pytest.raises(KeyboardInterrupt):
            run(bank, out, config)
        monkeypatch.setattr(distill._Journal, "append", real_append)
        before = results(out)
        assert len(before) == 8
        interrupted = json.loads((out / distill.MANIFEST).read_text())
        assert interrupted["this_run"]["stopped"] == "interrupted"
        # ... and a kill in the middle of writing a line leaves half of one behind.
        with (out / distill.CHAINS).open("a") as handle:
            handle.write('{"id": "q5-cot1", "language": "en", "categ')
        manifest = run(bank, out, config)
    after = results(out)  # raises on any duplicate id
    wanted = {distill.chain_id(f"q{i}", s) for i in range(12) for s in range(2)}
    assert set(after) == wanted and all(after[k] == v for k, v in before.items())
    assert manifest["this_run"]["requests"] == len(wanted) - len(before)  # only what was missing is asked
    assert manifest["counts"]["done"] == 24 and manifest["counts"]["pending"] == 0
    assert manifest["counts"]["kept"] == 16 and manifest["counts"]["rejected"] == {"wrong answer": 8}
    assert manifest["totals"]["runs"] == 2
    assert manifest["totals"]["requests"] == interrupted["this_run"]["requests"] + 16
    assert_counts_add_up(manifest)


def test_a_teacher_that_keeps_failing_stops_the_run_keeping_what_was_done(tmp_path: Path) -> None:
    bank = write_bank(tmp_path / "bank.jsonl", [mcq(i, "answer-C") for i in range(8)])
    out = tmp_path / "out"
    with TeacherServer() as server:
        config = settings(
            server, cache=False, teacher={"concurrency": 1, "max_attempts": 2, "max_consecutive_failures": 2}
        )
        server.fail_after = 3
        with pytest.raises(DistillStopped) as stopped:
            run(bank, out, config)
        message = str(stopped.value)
        assert "failed 2 requests in a row" in message and "HTTP 500" in message
        assert "3 kept" in message and "5 chain(s) not yet distilled" in message and "same command again" in message
        assert server.teacher_calls() == 3 + 2 * 2  # two requests of two attempts each, then nothing more
        manifest = json.loads((out / distill.MANIFEST).read_text())
        assert manifest["this_run"]["stopped"] and manifest["counts"]["kept"] == 3
        assert len(lines(out / distill.CHAINS)) == 3
        server.fail_after = None
        manifest = run(bank, out, config)
    assert manifest["counts"]["kept"] == 8 and len(results(out)) == 8 and manifest["this_run"]["stopped"] is None


def test_rerun_is_stable_and_served_from_the_cache(tmp_path: Path) -> None:
    bank = write_bank(tmp_path / "bank.jsonl", [mcq(i, "answer-C") for i in range(3)] + [open_item(0)])
    with TeacherServer() as server:
        config = settings(server, teacher_judges=True, teacher={"samples": 2, "concurrency": 1})
        run(bank, tmp_path / "a", config)
        calls = sum(server.calls.values())
        # 4 items x 2 samples, each its own request; the open item's two same answers judged once
        assert calls == 8 + 1
        again = run(bank, tmp_path / "a", config)
        assert again["this_run"]["requests"] == 0 and sum(server.calls.values()) == calls
        fresh = run(bank, tmp_path / "b", config)  # another folder, same teacher and prompt: from the cache
        assert sum(server.calls.values()) == calls and fresh["this_run"]["cached"] == 8
        assert fresh["this_run"]["judge_cached"] == 2
    assert (tmp_path / "a" / distill.CHAINS).read_bytes() != b""
    ids = sorted(results(tmp_path / "a"))
    assert (
        ids
        == sorted(results(tmp_path / "b"))
        == sorted(distill.chain_id(i, s) for i in ("q0", "q1", "q2", "o0") for s in (0, 1))
    )


def test_an_output_folder_of_another_teacher_or_prompt_is_refused(tmp_path: Path) -> None:
    bank = write_bank(tmp_path / "bank.jsonl", [mcq(0, "answer-C")])
    template = tmp_path / "prompt.txt"
    template.write_text("Reason carefully.\n\n{question}\n\nEnd with ## Final Response and the letter.")
    with TeacherServer() as server:
        run(bank, tmp_path / "out", settings(server))
        with pytest.raises(DistillError, match=r"teacher 'teacher-x'.*this run is teacher 'teacher-z'.*collide"):
            run(bank, tmp_path / "out", settings(server, teacher={"model": "teacher-z"}))
        with pytest.raises(DistillError, match="another --output-dir"):
            run(bank, tmp_path / "out", settings(server, template=template.read_text()))


def test_selection_filters_draws_seeded_and_counts_what_it_leaves(tmp_path: Path) -> None:
    items = [mcq(i, "answer-C") for i in range(10)]
    items[1]["subspecialty"] = "Biomechanics"
    items[2] = item(
        "n2", "mcq", f"Which? [[answer-C]]\n{OPTIONS}", "C", category="Orthopedic Trauma", subspecialty=None
    )
    items[3] = item("r3", "report", "Write a report.", "Report text.")
    bank = write_bank(tmp_path / "bank.jsonl", items)
    source = distill.source_input(str(bank), None, None)

    def chosen(**kw: Any) -> list[str]:
        picked = distill.select(source, Selection(**kw), "error")
        return [p.record.id for p in picked.items]

    assert chosen() == [i["id"] for i in items if i["id"] != "r3"]
    assert "n2" not in chosen(filters=Filters(split=["spine"]))
    assert chosen(filters=Filters(subspecialty=["Biomechanics"])) == ["q1"]
    three, five = chosen(count=3, seed=1), chosen(count=5, seed=1)
    assert three == chosen(count=3, seed=1) and set(three) < set(five)  # seeded; a larger count only adds
    assert chosen(count=3, seed=2) != three or chosen(count=3, seed=3) != three
    assert len(chosen(fraction=0.5)) == 4
    picked = distill.select(source, Selection(filters=Filters(split=["spine"])), "error")
    assert picked.excluded["filtered out"] == 2 and picked.qualifying == 8  # the non-spine item and the report
    with pytest.raises(DistillError, match="only 9 item"):
        chosen(count=10)
    with pytest.raises(ValueError, match="not report"):
        Selection(filters=Filters(task=["report"]))


def test_items_that_cannot_be_verified_are_named_or_skipped_and_counted(tmp_path: Path) -> None:
    items = [mcq(0, "answer-C"), item("x1", "mcq", "Which level? [[answer-C]]", "C"), mcq(2, "answer-C", key="?")]
    bank = write_bank(tmp_path / "bank.jsonl", [*items, {"id": "bad"}])
    source = distill.source_input(str(bank), None, None)
    with pytest.raises(DistillError) as error:
        distill.select(source, Selection(), "error")
    message = str(error.value)
    assert f"{bank}:2: no options" in message and f"{bank}:3: no answer key" in message
    assert f"{bank}:4: unknown category" in message and "nothing was asked" in message
    picked = distill.select(source, Selection(), "skip")
    assert [p.record.id for p in picked.items] == ["q0"]
    assert picked.unusable == {"no options": 1, "no answer key": 1, "unknown category": 1}


def test_images_reach_the_teacher_and_the_chain_keeps_them_readable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    smoke_images.write_image("mri-sagittal-L4.png", data / "images")
    question = f"<image>Which level is marked? [[answer-C]]\n{OPTIONS}"
    pointer = {"dataset": "VerSe", "case": "sub-1", "file": "ct-sagittal-L3.png"}
    smoke_images.write_image("ct-sagittal-L3.png", data / "open_datasets" / "VerSe" / "sub-1")
    bank = write_bank(
        data / "bank.jsonl",
        [
            item("i0", "mcq", question, "C", images=["images/mri-sagittal-L4.png"]),
            item("i1", "mcq", question, "C", images=[pointer]),
        ],
    )
    out = tmp_path / "elsewhere" / "chains"
    with TeacherServer() as server:
        source = distill.source_input(str(bank), data, None)
        distill.distill(settings(server), source, out)
        parts = [
            p for b in server.bodies for m in b["messages"] if isinstance(m["content"], list) for p in m["content"]
        ]
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)
        text_only = distill.select(source, Selection(text_only=True), "error")
        assert text_only.items == [] and text_only.excluded == {"has images (text only)": 2}
    kept = {c["id"]: c for c in lines(out / distill.CHAINS)}
    assert kept["i0-cot0"]["images"] == ["../../data/images/mri-sagittal-L4.png"]  # relative to the chains' folder
    assert kept["i1-cot0"]["images"] == [pointer]  # pointers stay pointers
    options = readers.ReadOptions(data_root=data / "open_datasets")
    records = {r.id: r for r in sources.read("spinemed", out / distill.CHAINS, options) if isinstance(r, Record)}
    assert len(records) == 2
    assert Path(records["i0-cot0"].images[0]).resolve() == (data / "images" / "mri-sagittal-L4.png").resolve()
    assert Path(records["i1-cot0"].images[0]).name == "ct-sagittal-L3.png"


# -- the chains in stage 2 ------------------------------------------------------------------------------------------


def test_stage2_build_picks_up_the_chains_and_decontaminates_them(root: Path, tmp_path: Path) -> None:
    from spinegpt.data_mixes import smoke_root

    absent = build_mix(root, tmp_path / "before", "stage2_spine", settings={})
    report = {c["name"]: c for c in absent.manifest["components"]}["spinemed_chains"]
    assert report["excluded"].startswith("optional source absent")
    assert {"source": "spinemed_chains", "reader": "spinemed", "absent": True}.items() <= next(
        i for i in absent.manifest["inputs"] if i["source"] == "spinemed_chains"
    ).items()

    with TeacherServer() as server:
        config = settings(server, teacher_judges=True, selection=Selection(filters=Filters(split=["spine"])))
        source = distill.source_input("spinemed", root, None)
        manifest = distill.distill(config, source, root / "SpineMed-450k" / "chains").manifest
    assert manifest["counts"]["kept"] > 3 and manifest["counts"]["rejected"].get("wrong answer", 0) > 0
    kept = lines(root / "SpineMed-450k" / "chains" / distill.CHAINS)
    leaked = [c for c in kept if c["messages"][0]["content"] == smoke_root.LEAKED_QUESTION]
    assert len(leaked) == 1  # the SpineBench question the smoke data holds got a chain too

    built = build_mix(root, tmp_path / "after", "stage2_spine", settings={})
    assert built.manifest["key"] != absent.manifest["key"]
    report = {c["name"]: c for c in built.manifest["components"]}["spinemed_chains"]
    assert report["read"] == len(kept) and report["dropped"] == {"benchmark leak": 1}
    assert report["kept"] == len(kept) - 1
    rows = [json.loads(x) for shard in built.shards for x in shard.read_text().splitlines()]
    thinking = [r for r in rows if r["messages"][-1]["content"].startswith("## Thinking")]
    assert len(thinking) >= len(kept) - 1
    assert not any(r["messages"][0]["content"] == smoke_root.LEAKED_QUESTION for r in thinking)
