"""The OpenAI-compatible HTTP judge against a real local server (tests/support/stub_openai.py):
what it sends, how each kind of answer becomes a reply, retries and Retry-After, order
under concurrency, the rate limit, the served-model check, which stack facts are hashed,
and that the API key never shows up in anything the judge writes."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time

import pytest
from stub_openai import StubOpenAI, hang, malformed, reply, status

from attnedit.errors import ConfigError
from attnedit.judge.base import ERROR, OK, REFUSAL, JudgeImage, JudgeRequest
from attnedit.judge.backends.openai_http import OpenAIHTTPJudge

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}  # what the stub reports


@pytest.fixture
def stub():
    with StubOpenAI() as server:
        yield server


def judge_for(stub: StubOpenAI, base_url: str | None = None, **options) -> OpenAIHTTPJudge:
    """A judge on the stub with test-sized timings; its stack probed, the record cleared."""
    settings = dict(concurrency=1, max_retries=2, backoff_seconds=0.01, timeout_seconds=0.5) | options
    judge = OpenAIHTTPJudge(base_url or stub.url, stub.model, **settings)
    judge.stack()
    stub.reset()
    return judge


def asks(*texts: str) -> list[JudgeRequest]:
    return [JudgeRequest(text) for text in texts]


def test_each_kind_of_answer_becomes_the_right_reply(stub):
    judge = judge_for(stub)
    stub.load(reply("SC: [8, 9]"), reply("no scores in this one"), malformed(),
              reply("half an answer", finish_reason="content_filter"), reply(None, refusal="I cannot judge this."),
              reply(""), status(500), reply("after a 500"), status(400))
    got = judge.generate(asks(*"abcdefgh"))
    assert [(r.kind, r.text) for r in got] == [
        (OK, "SC: [8, 9]"), (OK, "no scores in this one"),  # an unparsable answer is the parser's business
        (ERROR, None), (REFUSAL, "half an answer"), (REFUSAL, "I cannot judge this."), (REFUSAL, ""),
        (OK, "after a 500"), (ERROR, None)]
    assert got[0].error is None and got[0].usage == USAGE
    assert "malformed" in got[2].error and "content_filter" in got[3].error
    assert "refusal" in got[4].error and "empty" in got[5].error
    assert got[7].error.startswith("HTTP 400: stub status 400")
    # the 500 was asked again, the 400 was not
    assert [s.body["messages"][0]["content"][0]["text"] for s in stub.chats] == [*"abcdefg", "g", "h"]


def test_a_content_policy_400_is_a_refusal_with_the_servers_message(stub):
    judge = judge_for(stub)
    policy = "Your request was rejected as a result of our safety system."
    stub.load(status(400, body={"error": {"code": "content_policy_violation", "message": policy}}),
              status(400, body={"error": {"code": "content_filter", "message": "filtered: violence"}}),
              status(400, body={"error": {"code": "invalid_image_format", "message": "bad image"}}))
    got = judge.generate(asks(*"abc"))
    assert [(r.kind, r.text) for r in got] == [(REFUSAL, None), (REFUSAL, None), (ERROR, None)]
    assert policy in got[0].error and "content_policy_violation" in got[0].error
    assert "filtered: violence" in got[1].error
    assert got[2].error == "HTTP 400: bad image"
    assert len(stub.chats) == 3  # none asked again


def test_a_429_waits_what_retry_after_asks_then_succeeds(stub):
    judge = judge_for(stub)
    stub.load(status(429, {"Retry-After": "0.3"}), reply("first"), status(429, {"retry-after-ms": "250"}), reply("second"))
    got = judge.generate(asks("a", "b"))
    assert [(r.kind, r.text) for r in got] == [(OK, "first"), (OK, "second")]
    arrivals = [s.time for s in stub.chats]
    assert len(arrivals) == 4
    assert arrivals[1] - arrivals[0] >= 0.3 and arrivals[3] - arrivals[2] >= 0.25  # not the 0.01 s backoff


def test_retries_back_off_exponentially_then_give_up(stub):
    judge = judge_for(stub, backoff_seconds=0.05)
    stub.load(status(503), status(503), status(503), status(429, {"Retry-After": "600"}))
    got = judge.generate(asks("a", "b"))
    assert (got[0].kind, got[0].error) == (ERROR, "HTTP 503 after 2 retries")
    gaps = [b.time - a.time for a, b in zip(stub.chats, stub.chats[1:3])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1
    # a wait beyond max_backoff_seconds is not retried early: it fails at once
    assert got[1].kind == ERROR and "wait 600 s" in got[1].error and len(stub.chats) == 4


def test_a_timeout_is_retried_then_reported(stub):
    judge = judge_for(stub, max_retries=1)
    stub.load(hang(3.0), hang(3.0))
    start = time.monotonic()
    (got,) = judge.generate(asks("a"))
    assert got.kind == ERROR and got.error == "timeout (0.5 s limit) after 1 retries"
    assert len(stub.chats) == 2 and time.monotonic() - start < 2.5


def test_an_interrupt_drops_the_queued_calls_and_ends_the_backoff_wait(stub):
    judge = judge_for(stub, max_backoff_seconds=30)
    stub.load(*[status(503, {"Retry-After": "20"})] * 3)
    ctrl_c = threading.Timer(0.3, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    start = time.monotonic()
    ctrl_c.start()  # while the first call waits to retry
    try:
        with pytest.raises(KeyboardInterrupt):
            judge.generate(asks(*"abc"))
    finally:
        ctrl_c.cancel()  # never let it hit another test
    assert time.monotonic() - start < 2 and len(stub.chats) == 1


def test_concurrent_requests_come_back_in_request_order():
    with StubOpenAI(delay=0.1) as stub:
        judge = judge_for(stub, concurrency=4)
        texts = [f"request {i}" for i in range(8)]
        got = judge.generate(asks(*texts))
        assert [r.text for r in got] == [f"echo: {t}" for t in texts]
        assert 2 <= stub.max_in_flight <= 4


def test_requests_per_minute_spaces_the_calls(stub):
    spreads = {}
    for limit in (600, None):  # 10 a second; no limit
        judge = judge_for(stub, concurrency=4, requests_per_minute=limit)
        judge.generate(asks(*"abcde"))
        spreads[limit] = stub.chats[-1].time - stub.chats[0].time
    assert spreads[600] >= 0.35  # 4 intervals of 0.1 s
    assert spreads[None] < 0.2


def test_the_message_holds_text_and_images_in_order_with_the_exact_bytes(stub):
    png, jpeg = bytes(range(256)) * 3, b"\xff\xd8\xff" + bytes(range(255, -1, -1))
    images = (JudgeImage(png), JudgeImage(jpeg, "image/jpeg"))
    judge = judge_for(stub, temperature=0.0, seed=7, max_tokens=99)
    judge.generate([JudgeRequest("judge these", images, text_first=True),
                    JudgeRequest("images first", images, text_first=False)])
    first, second = stub.chats
    assert [p["type"] for p in first.content()] == ["text", "image_url", "image_url"]
    assert [p["type"] for p in second.content()] == ["image_url", "image_url", "text"]
    assert first.content()[0]["text"] == "judge these"
    for seen in (first, second):
        assert seen.image_bytes() == [png, jpeg]
        urls = [p["image_url"]["url"] for p in seen.content() if p["type"] == "image_url"]
        assert urls[0].startswith("data:image/png;base64,") and urls[1].startswith("data:image/jpeg;base64,")
        assert {k: v for k, v in seen.body.items() if k != "messages"} == \
            {"model": stub.model, "temperature": 0.0, "seed": 7, "max_tokens": 99}
    other = judge_for(stub, temperature=None, top_p=0.9, image_detail="high")
    other.generate([JudgeRequest("x", images[:1])])
    (seen,) = stub.chats
    assert "temperature" not in seen.body and seen.body["top_p"] == 0.9
    assert seen.content()[0]["image_url"]["detail"] == "high"


def test_the_stack_names_the_served_model_and_a_changed_one_is_an_error(stub):
    judge = OpenAIHTTPJudge(stub.url, "judge-alias", timeout_seconds=0.5, backoff_seconds=0.01)
    facts = judge.stack()
    assert (facts["model"], facts["served_model"], facts["base_url"]) == ("judge-alias", stub.model, stub.url)
    assert (facts["server_version"], facts["system_fingerprint"]) == (stub.version, "fp_stub_1")
    assert [s.body["max_tokens"] for s in stub.chats] == [1]  # the probe is one token
    judge.stack()
    assert judge.probe_calls == len(stub.chats) == 1  # probed once
    stub.load(reply("same"), reply("moved", model="stub-judge-snapshot-b"))
    got = judge.generate(asks("a")) + judge.generate(asks("b"))
    assert got[0].kind == OK
    assert (got[1].kind, got[1].error) == (ERROR, f"served model changed from {stub.model} to stub-judge-snapshot-b")
    with StubOpenAI(version=None) as bare:
        assert OpenAIHTTPJudge(bare.url, bare.model).stack()["server_version"] is None


def test_the_hashed_stack_is_the_same_for_two_spellings_of_one_server(stub):
    """localhost vs 127.0.0.1, a rotated fingerprint, another weights path: recorded, not hashed."""
    port = stub.url.split(":")[2].split("/")[0]
    first = OpenAIHTTPJudge(f"http://localhost:{port}/v1", stub.model, timeout_seconds=2).stack()
    stub.root = "/other/copy/of/stub-judge"
    stub.load(reply("ok", fingerprint="fp_stub_2"))  # the second judge's probe
    second = OpenAIHTTPJudge(f"http://127.0.0.1:{port}/v1", stub.model, timeout_seconds=2).stack()
    volatile = ("base_url", "served_root", "system_fingerprint")
    assert OpenAIHTTPJudge.UNHASHED == volatile
    assert [(first[k], second[k]) for k in volatile] == [
        (f"http://localhost:{port}/v1", f"http://127.0.0.1:{port}/v1"), ("/weights/stub-judge", stub.root),
        ("fp_stub_1", "fp_stub_2")]
    hashed = [{k: v for k, v in facts.items() if k not in volatile} for facts in (first, second)]
    assert hashed[0] == hashed[1]
    assert (hashed[0]["served_model"], hashed[0]["server_version"]) == (stub.model, stub.version)


def test_the_api_key_never_leaves_the_request_header(stub, monkeypatch, caplog):
    secret = "sk-test-6f1e0c9a2b7d4e3f"
    monkeypatch.setenv("ATTNEDIT_TEST_JUDGE_KEY", secret)
    caplog.set_level(logging.DEBUG)
    judge = judge_for(stub, api_key_env="ATTNEDIT_TEST_JUDGE_KEY", max_retries=1)
    echo = {"error": {"message": "Incorrect API key provided: {AUTHORIZATION}"}}
    stub.load(status(401, body=echo), status(429), status(429), malformed(), reply("fine"))
    replies = judge.generate(asks(*"abcd"))
    assert [r.kind for r in replies] == [ERROR, ERROR, ERROR, OK]
    assert "***" in replies[0].error  # the server did echo the key: masked
    assert {s.headers["Authorization"] for s in stub.chats} == {f"Bearer {secret}"}  # the key was sent
    with pytest.raises(ConfigError) as probe_failed:
        stub.load(status(401, body=echo))
        OpenAIHTTPJudge(stub.url, stub.model, api_key_env="ATTNEDIT_TEST_JUDGE_KEY").stack()
    written = [repr(judge), str(judge), repr(vars(judge)), json.dumps(judge.stack()), caplog.text,
               str(probe_failed.value), *(json.dumps(r.to_json()) for r in replies)]
    assert not [text for text in written if secret in text]


@pytest.mark.parametrize("url", ["http://user:hunter2@127.0.0.1:9/v1", "http://hunter2@127.0.0.1:9/v1",
                                 "http://127.0.0.1:9/v1?api-key=hunter2", "http://127.0.0.1:9/v1#hunter2"])
def test_a_base_url_with_room_for_a_secret_is_refused_in_one_line(url):
    with pytest.raises(ConfigError) as err:
        OpenAIHTTPJudge(url, "m")
    message = str(err.value)
    assert "\n" not in message and "hunter2" not in message
    assert message.startswith("judge.backend.base_url=http://127.0.0.1:9/v1 holds ")
    assert "judge.backend.api_key_env" in message


def test_a_missing_key_variable_is_one_line_naming_it(monkeypatch):
    monkeypatch.delenv("ATTNEDIT_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError) as err:
        OpenAIHTTPJudge("http://127.0.0.1:9/v1", "m", api_key_env="ATTNEDIT_TEST_NO_SUCH_KEY")
    assert "ATTNEDIT_TEST_NO_SUCH_KEY" in str(err.value) and "\n" not in str(err.value)
