"""attnedit-judge: someone else's edits in the benchmarks' official layouts, checked for
completeness before any call, judged through an OpenAI-compatible server (the stub on
127.0.0.1), written as rows, tables and the official result files; a killed process's
replies are not asked again by the next one."""

from __future__ import annotations

import hashlib
import json
import math
import re
import signal
import time

import numpy as np
import pandas as pd
import pytest

from attnedit.config import compose
from attnedit.errors import DataError
from attnedit.run.judge_folder import judge_folder
from judge_fixtures import GEDIT_GROUPS, build_gedit_copy, build_imgedit_copy, write_gedit_edits, write_imgedit_edits
from processes import cli
from stub_openai import StubOpenAI


def sc_of(key: str) -> int:
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 11  # 0..10, a function of the item only


def gedit_reply(body) -> str:
    """SC from the key's hash (found through the instruction), PQ fixed at 7; the probe: 'ok'."""
    content = body["messages"][0]["content"]
    text = next(p["text"] for p in content if p["type"] == "text")
    images = sum(p["type"] == "image_url" for p in content)
    found = re.search(r"make edit (\d+) of kind ([\w-]+)", text)
    if found is None:
        return "ok" if images == 0 else '{"score": [7, 9]}'
    return json.dumps({"score": [sc_of(found[2] + found[1]), 10], "reasoning": "test"})


def judge_overrides(stub, tmp_path, *extra):
    return ["judge=openai_http", f"judge.backend.base_url={stub.url}", f"judge.backend.model={stub.model}",
            "judge.backend.backoff_seconds=0.01", "judge.backend.concurrency=2", f"paths.root_dir={tmp_path}",
            f"judge.cache_dir={tmp_path / 'cache'}", *extra]


def asked(stub) -> list[str]:
    """Each chat request by what was asked: the text and the image bytes."""
    out = []
    for seen in stub.chats:
        text = next((p["text"] for p in seen.content() if p["type"] == "text"), "")
        if "make edit" in text or seen.image_bytes():
            out.append(hashlib.sha256(text.encode() + b"".join(seen.image_bytes())).hexdigest())
    return out


def test_gedit_folder_killed_then_resumed_asks_nothing_twice_and_writes_official_files(tmp_path, capsys):
    copy = build_gedit_copy(tmp_path / "gedit", n_per_type=1, languages=("en",), size=(16, 16))
    edits = tmp_path / "save" / "mymodel"
    write_gedit_edits(edits, copy.rows)
    with StubOpenAI(delay=0.15) as stub:
        stub.responder = gedit_reply
        out = tmp_path / "judged"
        args = [f"edits={edits}", f"dataset.gedit.root={copy.root}", "batch_size=2", f"out={out}",
                *judge_overrides(stub, tmp_path)]
        first = cli(*args, root=tmp_path, tool="attnedit-judge")
        deadline, archive_file = time.time() + 120, out / "judge_replies.jsonl"
        while time.time() < deadline and first.poll() is None:  # a batch of 2 cases = 4 calls in 2 rounds of 2:
            lines = archive_file.read_text().count("\n") if archive_file.exists() else 0
            if lines % 4 == 2 and list((out / "cases").glob("*.parquet")):  # kill mid-batch, one round cached
                break
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)  # no chance to tidy up
        first.wait()
        archive = (out / "judge_replies.jsonl").read_text().splitlines()
        assert archive and first.returncode == -signal.SIGKILL
        before = set(asked(stub))
        stub.reset()
        stub.delay = 0.0
        judge_folder(compose("judge_folder", args))  # the next run (in this process: the real one was the kill)
        output = capsys.readouterr().out
        again = set(asked(stub))
    # what the killed process was answered is never asked again (its last batch's first round is the cache's);
    # only the round in flight at the kill is asked twice
    assert len(archive) % 4 == 2 and len(before & again) <= 2
    hits = int(re.search(r"(\d+) cache hits", output)[1])
    assert hits >= 2
    rows = pd.read_parquet(out / "cases")
    assert len(rows) == 11 and not rows.viescore_sc_failed.any()
    for row in rows.itertuples():
        entry = next(r for r in copy.rows if r["key"] == row.sample_id)
        n = re.search(r"make edit (\d+)", entry["instruction"])[1]
        assert row.viescore_sc == min(sc_of(entry["task_type"] + n), 10) and row.viescore_pq == 7
    # the official statistics on the official CSVs: per type, then the unweighted mean of the 11
    folder = out / "official" / "mymodel" / "qwen25vl" / "eval_results_new"
    means = []
    for group in GEDIT_GROUPS:
        csv = pd.read_csv(folder / f"mymodel_{group}_gpt_score.csv")
        means.append(np.mean([math.sqrt(s * q) for s, q in zip(csv.sementics_score, csv.quality_score)]))
    table = pd.read_csv(next((out / "tables").glob("viescore_mymodel*.csv")))
    average = table[(table.subset == "full") & (table.type == "average")]
    assert math.isclose(float(average.O_mean.iloc[0]), float(np.mean(means)), abs_tol=1e-12)


def test_completeness_is_checked_before_any_call(tmp_path):
    copy = build_gedit_copy(tmp_path / "gedit", n_per_type=1, task_types=("color_alter", "subject-add"),
                            languages=("en",))
    edits = tmp_path / "save" / "m"
    skipped = copy.rows[0]["key"]
    write_gedit_edits(edits, copy.rows, skip=[skipped])
    (edits / "fullset" / "color_alter" / "en" / "stray.png").write_bytes(b"")
    with StubOpenAI() as stub:
        stub.responder = gedit_reply
        cfg = compose("judge_folder", [f"edits={edits}", f"dataset.gedit.root={copy.root}",
                                       "dataset.gedit.task_types=[color_alter,subject-add]",
                                       *judge_overrides(stub, tmp_path)])
        with pytest.raises(DataError, match=rf"lacks 1 file\(s\).*{skipped}\.png.*missing=skip"):
            judge_folder(cfg)
        assert asked(stub) == []
        cfg.missing = "skip"
        out = judge_folder(cfg)
    rows = pd.read_parquet(out / "cases")
    assert list(rows.sample_id) == [copy.rows[1]["key"]]
    assert out.parent == tmp_path / "results" / "judged" / "gedit" / "m"  # <model>/<hash of the judge stack>
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["completeness"]["extra"] == ["fullset/color_alter/en/stray.png"]


def test_imgedit_folder_rubric_scores_failures_and_official_files(tmp_path):
    copy = build_imgedit_copy(tmp_path / "imgedit", n_per_type=2)
    edits = tmp_path / "edited"
    write_imgedit_edits(edits, copy)
    keys = sorted(copy.items, key=int)
    broken = keys[3]
    planted = {k: [1 + (int(k) + j) % 5 for j in range(3)] for k in keys}

    def reply(body):
        text = next(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")
        key = next((k for k in keys if copy.items[k]["prompt"] in text), None)
        if key is None:
            return "ok"
        if key == broken:
            return "I would rather not score this."
        return "Brief reasoning: test\n" + "\n".join(f"Criterion {j}: {v}" for j, v in enumerate(planted[key]))

    with StubOpenAI() as stub:
        stub.responder = reply
        cfg = compose("judge_folder", ["benchmark=imgedit", f"edits={edits}", f"dataset.imgedit.root={copy.root}",
                                       f"dataset.imgedit.images_root={copy.images_root}",
                                       *judge_overrides(stub, tmp_path)])
        out = judge_folder(cfg)
    rows = pd.read_parquet(out / "cases").set_index("sample_id")
    assert rows.loc[broken, "imgedit_failed"] and math.isnan(rows.loc[broken, "imgedit"])
    for key in keys:
        if key != broken:
            assert rows.loc[key, "imgedit"] == pytest.approx(np.mean(planted[key]), abs=1e-12)
    folder = out / "official" / "edited"
    averages = json.loads((folder / "average_score.json").read_text())
    assert broken not in averages and averages[keys[0]] == round(sum(planted[keys[0]]) / 3, 2)
    types = json.loads((folder / "typescore.json").read_text())
    for edit_type in {copy.items[k]["edit_type"] for k in keys}:
        items = [round(sum(planted[k]) / 3, 2) for k in keys if copy.items[k]["edit_type"] == edit_type and k != broken]
        assert types[edit_type] == round(sum(items) / len(items), 2)
    assert broken in (folder / "README.txt").read_text()


def test_a_call_without_answer_fails_the_case_and_the_next_run_asks_again(tmp_path):
    from stub_openai import reply, status

    copy = build_gedit_copy(tmp_path / "gedit", n_per_type=1, task_types=("color_alter", "subject-add"),
                            languages=("en",))
    edits = tmp_path / "save" / "m"
    write_gedit_edits(edits, copy.rows)
    with StubOpenAI() as stub:
        stub.responder = gedit_reply
        args = [f"edits={edits}", f"dataset.gedit.root={copy.root}", "dataset.gedit.task_types=[color_alter,subject-add]",
                f"out={tmp_path / 'out'}", *judge_overrides(stub, tmp_path, "judge.backend.max_retries=0",
                                                            "judge.backend.concurrency=1")]
        stub.load(reply("ok"), status(503))  # the probe, then no answer to the first judged call
        out = judge_folder(compose("judge_folder", args))
        rows = pd.read_parquet(out / "cases")
        failed = rows[rows.failed]
        assert len(failed) == 1 and "JudgeUnavailable" in failed.error.iloc[0] and "HTTP 503" in failed.error.iloc[0]
        assert failed.viescore_unavailable.all() and not rows[~rows.failed].viescore_unavailable.any()
        before = len(stub.chats)
        out = judge_folder(compose("judge_folder", args))  # the next run asks that case's missing call again
        rows = pd.read_parquet(out / "cases")
        assert len(rows) == 2 and not rows.failed.any() and rows.case_id.is_unique
        assert len(stub.chats) - before == 2  # the probe and the call that got no answer; the rest is cached
