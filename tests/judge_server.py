"""A chat-completions server on loopback for tests: it grades by a behaviour named in the model's report text
(``[[good]]``, ``[[malformed]]`` ...), so each test item chooses how the judge misbehaves."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from spinegpt.eval_hooks.rubric import DIMENSIONS

GOOD = dict.fromkeys(DIMENSIONS, 4) | {"imaging_report": 5, "diagnosis": 3}


class JudgeServer:
    """Behaviours: good, fenced, malformed, malformed-once, missing, float, http500, http500-once, slow-once,
    not-chat, trickle, endless, and for the answer extractor letters-<LETTERS> / letters-none. Anything else (no
    marker) is graded good."""

    def __init__(self, slow_s: float = 1.5):
        self.slow_s = slow_s
        self.calls: Counter[str] = Counter()
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
                prompt = body["messages"][-1]["content"]
                match = re.search(r"\[\[([a-z0-9-]+)\]\]", prompt)
                behaviour = match.group(1) if match else "good"
                with server._lock:
                    server.calls[behaviour] += 1
                    count = server.calls[behaviour]
                    server.auth.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    server.respond(self, behaviour, count, body)
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def respond(self, handler: BaseHTTPRequestHandler, behaviour: str, count: int, body: dict[str, Any]) -> None:
        time.sleep(0.05)  # long enough for concurrent requests to overlap
        content: str | None = json.dumps(GOOD)
        status = 200
        if behaviour == "fenced":
            content = "```json\n" + json.dumps(GOOD) + "\n```"
        elif behaviour == "malformed" or (behaviour == "malformed-once" and count == 1):
            content = '{"imaging_report": 5, "diagnosis": '
        elif behaviour == "missing":
            content = json.dumps({k: v for k, v in GOOD.items() if k != "granularity"})
        elif behaviour == "float":
            content = json.dumps(GOOD | {"coverage": 4.5})
        elif behaviour == "http500" or (behaviour == "http500-once" and count == 1):
            status = 500
        elif behaviour == "slow-once" and count == 1:
            time.sleep(self.slow_s)
        elif behaviour == "not-chat":
            content = None
        elif behaviour.startswith("letters-"):  # the answer extractor's replies: letters-C, letters-none, letters-Z
            chosen = behaviour.removeprefix("letters-")
            content = json.dumps({"letters": [] if chosen == "none" else list(chosen.upper())})
        elif behaviour == "trickle":
            self._trickle(handler, body)
            return
        elif behaviour == "endless":
            self._endless(handler)
            return
        payload: dict[str, Any] = (
            {"error": "boom"}
            if status != 200
            else (
                {"choices": [{"message": {"role": "assistant", "content": content}}], "model": body["model"]}
                if content is not None
                else {"result": "not a chat completion"}
            )
        )
        data = json.dumps(payload).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and went away

    @staticmethod
    def _trickle(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        """A valid reply sent one byte every 0.2 s: each read is quick, the whole reply takes minutes."""
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": json.dumps(GOOD)}}]}).encode()
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            for i in range(len(data)):  # bounded: stops when the body is sent or the client has gone
                handler.wfile.write(data[i : i + 1])
                handler.wfile.flush()
                time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass

    @staticmethod
    def _endless(handler: BaseHTTPRequestHandler) -> None:
        """A reply that never ends, sent as fast as the client reads: only a bound on its size stops it."""
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(b'{"choices": [{"message": {"role": "assistant", "content": "')
            block = b"x" * (1 << 16)
            deadline = time.monotonic() + 120  # bounded even if the client never leaves
            while time.monotonic() < deadline:
                handler.wfile.write(block)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def __enter__(self) -> JudgeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
