"""The reply cache: concurrent writers of one shared folder and one run archive, a line cut
short by a kill, error replies, a second process reading what the first stored, damaged
files. Expected replies come from an independent function of the key, and the files are
read here with plain ``json``, not through the cache."""

from __future__ import annotations

import hashlib
import json
import fcntl
import multiprocessing
import threading
from pathlib import Path

import pytest

from attnedit.judge.base import ERROR, OK, REFUSAL, JudgeImage, JudgeReply, JudgeRequest, request_key
from attnedit.judge.cache import ReplyCache

WORKERS, PER_WORKER, STRIDE = 4, 50, 25  # worker w handles keys w*25 .. w*25+49: neighbours overlap
BIG = 100_000  # reply text length: several write calls per file, so a non-atomic write can be seen half done


def key_of(i: int) -> str:
    return hashlib.sha256(f"key {i}".encode()).hexdigest()


def reply_of(i: int, size: int = 40) -> JudgeReply:
    """What the judge answered to key i (every writer of a key has the same answer)."""
    kind = REFUSAL if i % 7 == 0 else OK
    return JudgeReply(f"answer {i} " + "x" * size, kind, None, {"prompt_tokens": i, "completion_tokens": 2 * i})


def shared_file(shared: Path, key: str) -> Path:
    return shared / key[:2] / f"{key}.json"


def lines_of(run_file: Path) -> list[str]:
    return run_file.read_text().split("\n")[:-1]  # a whole file ends with a newline


def writer(shared: Path, run_file: Path, worker: int, barrier, out: Path) -> None:
    cache = ReplyCache(shared, run_file)
    barrier.wait()
    wrong = []
    for i in range(worker * STRIDE, worker * STRIDE + PER_WORKER):
        got = cache.get(key_of(i))
        if got is None:
            cache.put(key_of(i), reply_of(i, BIG), {"worker": worker})
        elif got.to_json() != reply_of(i, BIG).to_json() or not got.cached:
            wrong.append(i)
    out.write_text(json.dumps({**cache.stats(), "wrong": wrong}))


def reader(shared: Path, barrier, stop, out: Path) -> None:
    """Reads every shared file while the writers write: a file that exists must be whole."""
    barrier.wait()
    seen = torn = 0
    while not stop.is_set():
        for path in shared.glob("*/*.json"):
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            seen += 1
            try:
                json.loads(text)
            except ValueError:
                torn += 1
    out.write_text(json.dumps({"seen": seen, "torn": torn}))


def test_concurrent_writers_keep_every_reply_whole_and_once_per_writer(tmp_path):
    shared, run_file = tmp_path / "shared", tmp_path / "run" / "judge_replies.jsonl"
    context = multiprocessing.get_context("fork")  # no re-import per child: cheap
    barrier, stop = context.Barrier(WORKERS + 1), context.Event()
    outs = [tmp_path / f"worker{w}.json" for w in range(WORKERS)]
    writers = [context.Process(target=writer, args=(shared, run_file, w, barrier, outs[w])) for w in range(WORKERS)]
    looker = context.Process(target=reader, args=(shared, barrier, stop, tmp_path / "reader.json"))
    for process in (*writers, looker):
        process.start()
    for process in writers:
        process.join(60)
    stop.set()
    looker.join(60)
    assert [p.exitcode for p in (*writers, looker)] == [0] * (WORKERS + 1)

    handled: dict[int, int] = {}  # key index -> how many workers asked for it
    for w in range(WORKERS):
        for i in range(w * STRIDE, w * STRIDE + PER_WORKER):
            handled[i] = handled.get(i, 0) + 1
    expected = {key_of(i): reply_of(i, BIG).to_json() for i in handled}

    stats = [json.loads(out.read_text()) for out in outs]
    assert all(s["wrong"] == [] for s in stats)
    assert [s["hits"] + s["misses"] for s in stats] == [PER_WORKER] * WORKERS
    assert [s["stored"] for s in stats] == [s["misses"] for s in stats]
    assert sum(s["misses"] for s in stats) >= len(expected)  # every key was put at least once

    records = [json.loads(line) for line in lines_of(run_file)]  # every line whole: json.loads raises otherwise
    assert {r["key"] for r in records} == set(expected)
    assert all(r["reply"] == expected[r["key"]] for r in records)
    index = {key_of(i): i for i in handled}
    counts: dict[str, int] = {}
    for r in records:
        counts[r["key"]] = counts.get(r["key"], 0) + 1
    assert all(counts[key] <= handled[index[key]] for key in counts)  # one line per worker that used it, at most
    assert len(records) <= sum(handled.values())

    files = sorted(shared.glob("*/*"))
    assert sorted(f.name for f in files) == sorted(f"{key}.json" for key in expected)  # no temporary file left
    assert all(json.loads(shared_file(shared, key).read_text())["reply"] == reply for key, reply in expected.items())
    looked = json.loads((tmp_path / "reader.json").read_text())
    assert looked["seen"] > 0 and looked["torn"] == 0, looked


def test_a_second_cache_serves_every_key_and_archives_shared_hits(tmp_path):
    shared, run_file = tmp_path / "shared", tmp_path / "run" / "judge_replies.jsonl"
    n = 20
    first = ReplyCache(shared, run_file)
    assert all(first.get(key_of(i)) is None for i in range(n))
    assert all(first.put(key_of(i), reply_of(i), {"i": i}) for i in range(n))
    assert first.stats() == {"hits": 0, "misses": n, "stored": n}

    for cache in (ReplyCache(shared, run_file), ReplyCache(None, run_file), ReplyCache(shared, None)):
        replies = [cache.get(key_of(i)) for i in range(n)]
        assert [r.to_json() for r in replies] == [reply_of(i).to_json() for i in range(n)]
        assert all(r.cached for r in replies)
        assert cache.stats() == {"hits": n, "misses": 0, "stored": 0}

    other_run = tmp_path / "other" / "judge_replies.jsonl"  # a new run finds the replies in the shared folder
    later = ReplyCache(shared, other_run)
    assert all(later.get(key_of(i)) is not None for i in range(n))
    records = [json.loads(line) for line in lines_of(other_run)]
    assert [(r["key"], r["reply"], r["meta"]) for r in records] == [
        (key_of(i), reply_of(i).to_json(), {"i": i}) for i in range(n)
    ]
    assert ReplyCache(None, other_run).get(key_of(n - 1)).text == reply_of(n - 1).text


def test_keys_of_real_requests_find_their_reply(tmp_path):
    request = JudgeRequest("rate the edit", (JudgeImage(b"\x89PNG one"), JudgeImage(b"\x89PNG two")))
    key, again = request_key("stack-a", request), request_key("stack-b", request)
    cache = ReplyCache(tmp_path / "shared", tmp_path / "judge_replies.jsonl")
    cache.put(key, JudgeReply("7"), {"stack": "stack-a"})
    assert cache.get(key).text == "7" and cache.get(again) is None  # another judge stack is another question
    with pytest.raises(ValueError, match="hex digest"):
        cache.get("../escape")


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_a_fresh_line(tmp_path):
    run_file = tmp_path / "judge_replies.jsonl"
    ReplyCache(None, run_file).put(key_of(1), reply_of(1), {})
    whole = json.dumps({"key": key_of(2), "reply": reply_of(2).to_json(), "meta": {}, "time": "t"})
    with open(run_file, "a") as handle:  # a writer killed half way through its line
        handle.write(whole[: len(whole) // 2])

    cache = ReplyCache(None, run_file)
    assert cache.get(key_of(1)).text == reply_of(1).text
    assert cache.get(key_of(2)) is None
    cache.put(key_of(3), reply_of(3), {})
    lines = lines_of(run_file)
    assert len(lines) == 3 and lines[1] == whole[: len(whole) // 2]
    assert [json.loads(lines[i])["key"] for i in (0, 2)] == [key_of(1), key_of(3)]

    fresh = ReplyCache(None, run_file)
    assert fresh.get(key_of(3)).text == reply_of(3).text and fresh.get(key_of(1)) is not None
    assert fresh.get(key_of(2)) is None
    assert fresh.stats() == {"hits": 2, "misses": 1, "stored": 0}


def test_an_archive_grown_by_another_shard_is_read_again(tmp_path):
    run_file = tmp_path / "judge_replies.jsonl"
    mine, theirs = ReplyCache(None, run_file), ReplyCache(None, run_file)
    mine.put(key_of(1), reply_of(1), {})
    assert mine.get(key_of(2)) is None  # the index is loaded, key 2 not in it yet
    theirs.put(key_of(2), reply_of(2), {})
    assert mine.get(key_of(2)).text == reply_of(2).text


def test_an_append_waits_for_the_lock_of_another_writer(tmp_path):
    """Appends take the archive's flock: what another writer holding it (mid-line) needs."""
    run_file = tmp_path / "judge_replies.jsonl"
    cache = ReplyCache(None, run_file)
    cache.put(key_of(1), reply_of(1), {})
    before = run_file.read_bytes()
    with open(run_file, "ab") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        waiting = threading.Thread(target=cache.put, args=(key_of(2), reply_of(2), {}))
        waiting.start()
        waiting.join(0.2)
        assert waiting.is_alive() and run_file.read_bytes() == before
        fcntl.flock(other, fcntl.LOCK_UN)
    waiting.join(10)
    assert [json.loads(line)["key"] for line in lines_of(run_file)] == [key_of(1), key_of(2)]


def test_error_replies_are_never_stored(tmp_path):
    shared, run_file = tmp_path / "shared", tmp_path / "judge_replies.jsonl"
    cache = ReplyCache(shared, run_file)
    assert cache.put(key_of(1), JudgeReply(None, ERROR, "timeout after 5 retries"), {}) is False
    assert cache.stats()["stored"] == 0
    assert not run_file.exists() and not shared_file(shared, key_of(1)).exists()
    assert cache.get(key_of(1)) is None and ReplyCache(shared, run_file).get(key_of(1)) is None
    shared_file(shared, key_of(2)).parent.mkdir(parents=True)  # an error record put there by other means
    shared_file(shared, key_of(2)).write_text(json.dumps({"key": key_of(2), "reply": {"text": None, "kind": ERROR}}))
    assert cache.get(key_of(2)) is None


def test_a_corrupt_shared_file_is_a_miss_and_is_replaced(tmp_path):
    shared = tmp_path / "shared"
    path = shared_file(shared, key_of(5))
    path.parent.mkdir(parents=True)
    path.write_text('{"key": "' + key_of(5) + '", "reply": {"te')  # cut short (a disk full, a copy)
    cache = ReplyCache(shared, tmp_path / "judge_replies.jsonl")
    assert cache.get(key_of(5)) is None and cache.stats()["misses"] == 1
    cache.put(key_of(5), reply_of(5), {})
    assert json.loads(path.read_text())["reply"] == reply_of(5).to_json()
    assert ReplyCache(shared, None).get(key_of(5)).to_json() == reply_of(5).to_json()
