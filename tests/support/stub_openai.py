"""A real OpenAI-compatible HTTP server on 127.0.0.1 (ephemeral port, background thread)
for judge tests: POST /v1/chat/completions answers with the next scripted step (a reply,
a status, a body that is not JSON, a hang longer than the client's timeout), else with a
default reply that echoes the request's first text part; GET /v1/models and GET /version
answer as vLLM does. Every request is recorded (method, path, headers, JSON body, arrival
time) so tests check what the client sent.

    with StubOpenAI() as stub:
        stub.load(reply("SC: [8, 9]"), status(429, {"Retry-After": "0.2"}), hang(1.0))
        ... OpenAIHTTPJudge(stub.url, stub.model, ...) ...
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Step:
    """One scripted answer to a chat call: ``status`` with ``headers`` and ``body`` (a dict
    sent as JSON, or raw bytes), after sleeping ``sleep`` seconds."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    sleep: float = 0.0


def completion(content: Any, model: str, finish_reason: str = "stop", refusal: str | None = None,
               fingerprint: str | None = "fp_stub_1") -> dict[str, Any]:
    """A chat-completions body as the OpenAI API writes it."""
    message = {"role": "assistant", "content": content}
    if refusal is not None:
        message["refusal"] = refusal
    return {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}


def reply(content: Any, model: str | None = None, **kwargs) -> Step:
    """A 200 reply (``model``: what the server says it served; None: the stub's model)."""
    return Step(body=("completion", content, model, kwargs))


def status(code: int, headers: dict[str, str] | None = None, body: Any = None) -> Step:
    """An HTTP status with an OpenAI-style error body; ``{AUTHORIZATION}`` in a dict body is
    replaced by the Authorization header received (a server that echoes the key)."""
    return Step(code, body if body is not None else {"error": {"message": f"stub status {code}"}}, headers or {})


def malformed() -> Step:
    """A 200 whose body is not JSON (a proxy's error page)."""
    return Step(200, b"<html>502 Bad Gateway</html>", {"Content-Type": "text/html"})


def hang(seconds: float) -> Step:
    """Answer only after ``seconds`` (longer than the client's timeout: it gives up first)."""
    return Step(body=("completion", "too late", None, {}), sleep=seconds)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float

    def content(self) -> list[dict[str, Any]]:
        """The user message's content parts."""
        return self.body["messages"][0]["content"]

    def image_bytes(self) -> list[bytes]:
        """The decoded bytes of each data: URL, in message order."""
        found = []
        for part in self.content():
            if part["type"] == "image_url":
                head, data = part["image_url"]["url"].split(",", 1)
                assert head.startswith("data:") and head.endswith(";base64"), head
                found.append(base64.b64decode(data, validate=True))
        return found


class StubOpenAI:
    """The server. ``model``: what replies report as served; ``version``: GET /version's
    answer (None: 404); ``root``: the weights path GET /v1/models lists for ``model``;
    ``delay``: seconds every default reply takes (to see requests overlap); ``responder``:
    a function of the request body giving the default reply's text (else the echo)."""

    def __init__(self, model: str = "stub-judge-snapshot-a", version: str | None = "0.0.1-stub",
                 root: str | None = "/weights/stub-judge", delay: float = 0.0) -> None:
        self.model, self.version, self.root, self.delay = model, version, root, delay
        self.responder = None  # body -> reply text: the default answer instead of the echo
        self.seen: list[Seen] = []
        self.in_flight = self.max_in_flight = 0
        self._script: list[Step] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> "StubOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # wakes hanging handlers
        self._server.shutdown()
        self._server.server_close()

    def load(self, *steps: Step) -> None:
        """Script the next chat answers (consumed in arrival order)."""
        with self._lock:
            self._script.extend(steps)

    @property
    def chats(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST" and urlsplit(s.path).path == "/v1/chat/completions"]

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self.max_in_flight = 0

    def _next(self) -> Step | None:
        with self._lock:
            return self._script.pop(0) if self._script else None


def _handler(stub: StubOpenAI):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers
        disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed-ACK stall)

        def log_message(self, *args) -> None:
            pass

        def _record(self, body: Any) -> None:
            with stub._lock:
                stub.seen.append(Seen(self.command, self.path, dict(self.headers), body, time.monotonic()))

        def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(code)
                headers = {"Content-Type": "application/json", **(headers or {})}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test)

        @property
        def route(self) -> str:
            return urlsplit(self.path).path  # a query in the base URL does not change the route

        def do_GET(self) -> None:
            self._record(None)
            if self.route == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": stub.model, "object": "model", "root": stub.root}]})
            elif self.route == "/version" and stub.version is not None:
                self._send(200, {"version": stub.version})
            else:
                self._send(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.loads(raw)
            self._record(body)
            if self.route != "/v1/chat/completions":
                return self._send(404, {"detail": "Not Found"})
            with stub._lock:
                stub.in_flight += 1
                stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
            try:
                step = stub._next()
                if step is None and stub.responder is not None:
                    step = Step(body=("completion", stub.responder(body), None, {}), sleep=stub.delay)
                if step is None:  # the default: echo the first text part
                    first = next(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")
                    step = Step(body=("completion", f"echo: {first}", None, {}), sleep=stub.delay)
                if step.sleep:
                    stub._stop.wait(step.sleep)
                out = step.body
                if isinstance(out, tuple) and out[0] == "completion":
                    _, content, model, kwargs = out
                    out = completion(content, model or stub.model, **kwargs)
                elif isinstance(out, dict):
                    out = json.loads(json.dumps(out).replace("{AUTHORIZATION}", self.headers.get("Authorization", "")))
                self._send(step.status, out, step.headers)
            finally:
                with stub._lock:
                    stub.in_flight -= 1

    return Handler
