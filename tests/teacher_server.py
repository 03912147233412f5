"""A chat-completions teacher on loopback for the distillation tests: it answers by a behaviour named in the question
(``[[answer-C]]``, ``[[hedge]]``, ``[[http500]]`` ...), so each test item chooses how the teacher (mis)behaves, and it
judges agreement for open-ended items when asked with the agreement prompt (``[[disagree]]`` in the question: no).
Also here: SpineMed items carrying those behaviours, and reading back what distill wrote."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from spinegpt.data_mixes import distill

REASONING = (
    "The question names the key finding. First recall the anatomy of the lumbar spine, then weigh each option "
    "against the history and the imaging, and rule out what does not fit."
)


def chain(answer: str) -> str:
    return f"## Thinking\n\n{REASONING}\n\n## Final Response\n\n{answer}"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


class TeacherServer:
    """Behaviours (in the question): answer-<LETTERS>, think-<LETTERS> (an R1-style <think> block),
    field-<LETTERS> (the chain in ``reasoning_content``), hedge, noreason, empty, truncated, repeat, open (a chain
    ending in an open answer), malformed, http500, slow, and malformed-once, http500-once, slow-once (answering C
    when asked again). Without a behaviour the answer is A. ``fail_all`` makes
    every request an HTTP 500, ``fail_after = N`` every teacher request after the N-th; ``judge_fail`` every
    agreement request. ``delay_s``: how long each reply takes."""

    def __init__(self, slow_s: float = 3.0, delay_s: float = 0.02):
        self.slow_s, self.delay_s = slow_s, delay_s
        self.fail_all = False
        self.fail_after: int | None = None
        self.judge_fail = False
        self.calls: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                system = next((_text(m["content"]) for m in body["messages"] if m["role"] == "system"), "")
                prompt = _text(body["messages"][-1]["content"])
                judging = '"agrees"' in system
                match = re.search(r"\[\[([A-Za-z0-9-]+)\]\]", prompt)
                behaviour = ("judge:" if judging else "") + (match.group(1) if match else "answer-A")
                with server._lock:
                    server.calls[behaviour] += 1
                    count = server.calls[behaviour]
                    if not judging and server.fail_after is not None and server.teacher_calls() > server.fail_after:
                        behaviour = "http500"
                    server.bodies.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    server.respond(self, behaviour, count, body, prompt)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def teacher_calls(self) -> int:
        return sum(n for b, n in self.calls.items() if not b.startswith("judge:"))

    def respond(
        self, handler: BaseHTTPRequestHandler, behaviour: str, count: int, body: dict[str, Any], prompt: str
    ) -> None:
        time.sleep(self.delay_s)
        status, raw = 200, None
        content: str | None = None
        reasoning: str | None = None
        finish = "stop"
        kind, _, arg = behaviour.partition("-")
        if behaviour.startswith("judge:"):
            if self.judge_fail:
                status = 500
            content = json.dumps({"agrees": "[[disagree]]" not in prompt})
        elif self.fail_all or behaviour == "http500" or (behaviour == "http500-once" and count == 1):
            status = 500
        elif behaviour == "malformed" or (behaviour == "malformed-once" and count == 1):
            raw = b'{"choices": [{"message": '
        elif behaviour == "slow" or (behaviour == "slow-once" and count == 1):
            time.sleep(self.slow_s)
            content = chain("A")
        elif behaviour.endswith("-once"):
            content = chain("C")  # the retry of a request that failed once gets the key of the tests' items
        elif kind == "answer":
            content = chain(arg)
        elif kind == "think":
            content = f"<think>{REASONING}</think>\n\nThe answer is {arg}."
        elif kind == "field":
            reasoning, content = REASONING, arg
        elif behaviour == "hedge":
            content = chain("It is A or B; I cannot decide between them.")
        elif behaviour == "noreason":
            content = "B"
        elif behaviour == "empty":
            content = None
        elif behaviour == "truncated":
            content, finish = "## Thinking\n\nThe question names the key finding. First recall", "length"
        elif behaviour == "repeat":
            content = chain("the spinal cord is compressed at this level and " * 8 + "so A.")
        elif behaviour == "open":
            content = chain("An L4/L5 disc herniation compressing the L5 root.")
        else:
            content = chain("A")
        if raw is None:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if reasoning is not None:
                message["reasoning_content"] = reasoning
            payload: dict[str, Any] = (
                {"error": "boom"}
                if status != 200
                else {
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "model": body["model"],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90},
                }
            )
            raw = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(raw)))
            handler.end_headers()
            handler.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and went away

    def __enter__(self) -> TeacherServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- question banks for it, and what distill made of them ---------------------------------------------------------

OPTIONS = "A. L1/L2\nB. L3/L4\nC. L4/L5\nD. T12/L1"


def mcq(i: int, behaviour: str, key: str = "C", **extra: Any) -> dict[str, Any]:
    question = f"Which disc level is most often herniated? (item {i}) [[{behaviour}]]\n{OPTIONS}"
    return item(f"q{i}", "mcq", question, key, **extra)


def open_item(i: int, behaviour: str = "open", **extra: Any) -> dict[str, Any]:
    question = f"What does the MRI of case {i} show? [[{behaviour}]]"
    return item(f"o{i}", "open_qa", question, "An L4/L5 disc herniation compressing the L5 nerve root.", **extra)


def item(item_id: str, task: str, question: str, answer: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": item_id,
        "language": "en",
        "category": "Spine Surgery",
        "subspecialty": "Trauma",
        "task": task,
        "messages": [
            {"role": "system", "content": "You are a spine surgeon."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "provenance": {"source_type": "textbook", "book": "Spine Surgery, 3rd ed."},
        **extra,
    }


def write_bank(path: Path, items: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    return path


def lines(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSONL file (a line being written right now is not one yet)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]


def results(out: Path) -> dict[str, str]:
    """chain id -> "kept" or the rejection reason, over both output files (an id found twice fails the test)."""
    found: dict[str, str] = {}
    for line in lines(out / distill.CHAINS):
        assert line["id"] not in found, f"duplicate {line['id']}"
        found[line["id"]] = "kept"
    for line in lines(out / distill.REJECTED):
        assert line["id"] not in found, f"duplicate {line['id']}"
        found[line["id"]] = line["reason"]
    return found
