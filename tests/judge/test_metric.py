"""The judge as a metric: requests built from the images as sent, replies cached before
they are parsed, failures that fail the column (never a filled-in score), re-asks as new
calls, passes averaged, and two judge stacks that tables refuse to pool."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from attnedit.errors import ConfigError
from attnedit.judge.base import ERROR, REFUSAL, JudgeBackend, JudgeReply
from attnedit.judge.metric import JudgeMetric
from attnedit.judge.prompts import load_gedit_prompts, load_imgedit_prompts
from attnedit.metrics.settings import SETTINGS_COLUMN, all_settings, check_uniform, row_settings
from attnedit.report.cells import split_failed


class Scripted(JudgeBackend):
    """Answers from a function of the request; counts what it was asked."""

    def __init__(self, answer, model="fake-judge"):
        self.answer, self.model, self.asked = answer, model, []

    def stack(self):
        return {"model": self.model, "temperature": 0.0}

    def generate(self, requests):
        self.asked += requests
        return [self.answer(r) for r in requests]


def images(count=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, size, size, generator=g), torch.rand(count, 3, size, size, generator=g)


def viescore(backend, tmp_path, **kw):
    return JudgeMetric("viescore", "viescore_tie", backend, load_gedit_prompts(None),
                       cache_dir=str(tmp_path / "cache"), **kw)


def test_viescore_columns_from_replies_and_no_fill(tmp_path):
    # SC replies by instruction, PQ fixed; case 2's SC is unparsable twice, so SC and O fail there.
    def answer(request):
        if len(request.images) == 1:
            return JudgeReply('{"score": [7, 5], "reasoning": "x"}')
        if "QQBROKEN" in request.text:
            return JudgeReply("I cannot rate this.")
        return JudgeReply('{"score": [9, 4]}' if "QQFIRST" in request.text else '{"score": [3, 8]}')

    backend = Scripted(answer)
    edited, source = images()
    out = viescore(backend, tmp_path)(edited, source, instruction=["QQFIRST", "QQSECOND", "QQBROKEN"])
    sc, pq = np.array([4.0, 3.0, np.nan]), np.array([5.0, 5.0, 5.0])
    np.testing.assert_array_equal(out["viescore_sc"].numpy(), sc)
    np.testing.assert_array_equal(out["viescore_pq"].numpy(), pq)
    np.testing.assert_allclose(out["viescore_o"].numpy()[:2], np.sqrt(sc[:2] * pq[:2]), rtol=0, atol=1e-12)
    assert math.isnan(out["viescore_o"][2]) and out["viescore_o_failed"] == [False, False, True]
    assert out["viescore_sc_failed"] == [False, False, True] and out["viescore_pq_failed"] == [False] * 3
    assert "unparsable" in out["viescore_error"][2] and out["viescore_error"][0] is None
    assert json.loads(out["viescore_raw"][2])[0]["sc"] == "I cannot rate this."
    # 3 SC + 3 PQ, then one re-ask of the unparsable SC (GEdit asks once more)
    assert len(backend.asked) == 7 and backend.asked[-1].attempt == 1


def test_images_sent_are_the_8bit_pngs_in_order(tmp_path):
    backend = Scripted(lambda r: JudgeReply('{"score": [5, 5]}'))
    edited, source = images(1)
    viescore(backend, tmp_path)(edited, source, instruction=["x"])
    sc = next(r for r in backend.asked if len(r.images) == 2)
    decoded = [np.asarray(Image.open(io.BytesIO(i.data))) for i in sc.images]
    expected = [(t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for t in (source, edited)]
    for got, want in zip(decoded, expected):
        np.testing.assert_array_equal(got, want)
    assert all(i.mime == "image/png" for i in sc.images) and sc.text_first is False


def test_refusals_and_errors_fail_and_only_answers_are_cached(tmp_path):
    kinds = iter([JudgeReply(None, REFUSAL, "content_filter"), JudgeReply(None, ERROR, "HTTP 500 after 5 retries")])

    def answer(request):
        return next(kinds) if len(request.images) == 2 else JudgeReply('{"score": [6, 6]}')

    backend = Scripted(answer)
    edited, source = images(2)
    out = viescore(backend, tmp_path, reask=0)(edited, source, instruction=["a", "b"])
    assert out["viescore_sc_failed"] == [True, True] and torch.isnan(out["viescore_sc"]).all()
    assert out["viescore_error"][0].startswith("SC: refusal") and "HTTP 500" in out["viescore_error"][1]
    # a second metric on the same cache: the refusal and the PQ answers are served, the error is asked again
    again = Scripted(lambda r: JudgeReply('{"score": [2, 2]}'))
    out2 = viescore(again, tmp_path, reask=0)(edited, source, instruction=["a", "b"])
    assert len(again.asked) == 1 and out2["viescore_sc"][1] == 2.0 and out2["viescore_sc_failed"] == [True, False]


def test_second_metric_asks_nothing_and_archives(tmp_path):
    backend = Scripted(lambda r: JudgeReply('{"score": [8, 6]}'))
    edited, source = images(4)
    first = viescore(backend, tmp_path)
    first.bind_run(tmp_path / "run")
    (tmp_path / "run").mkdir()
    a = first(edited, source, instruction=list("abcd"))
    second_backend = Scripted(lambda r: pytest.fail("the cache should have answered"))
    second = viescore(second_backend, tmp_path)
    b = second(edited, source, instruction=list("abcd"))
    assert second_backend.asked == [] and second.cache.stats()["misses"] == 0 and second.cache.stats()["hits"] == 8
    torch.testing.assert_close(a["viescore_o"], b["viescore_o"])
    lines = (tmp_path / "run" / "judge_replies.jsonl").read_text().splitlines()
    assert len(lines) == 8  # every reply the run used, in its own archive


def test_passes_average_and_the_pass_is_part_of_the_key(tmp_path):
    count = iter(range(100))
    backend = Scripted(lambda r: JudgeReply(f'{{"score": [{next(count) % 10}, 9]}}'))
    edited, source = images(1)
    out = viescore(backend, tmp_path, passes=3)(edited, source, instruction=["x"])
    passes = json.loads(out["viescore_sc_passes"][0])
    assert len(passes) == 3 and len(backend.asked) == 6
    assert out["viescore_sc"][0].item() == pytest.approx(float(np.mean(passes)))


def test_imgedit_rubric_mean_of_criteria(tmp_path):
    backend = Scripted(lambda r: JudgeReply("Brief reasoning: ok\nA: 4\nB: 5\nC: 2" if "add" in r.text.lower()
                                             else "A: 1\nB: 1"))
    metric = JudgeMetric("imgedit", "imgedit_rubric", backend, load_imgedit_prompts(None),
                         cache_dir=str(tmp_path / "c"), text_first=True)
    edited, source = images(2)
    prompts = load_imgedit_prompts(None)
    out = metric(edited, source, instruction=["add a hat", "make it blue"], edit_type=["add", "adjust"])
    assert out["imgedit"][0].item() == pytest.approx((4 + 5 + 2) / 3)
    assert out["imgedit_failed"] == [False, True]
    assert backend.asked[0].text == prompts.text_for("add", "add a hat") and backend.asked[0].text_first


def test_tables_count_column_failures_and_refuse_two_stacks(tmp_path):
    edited, source = images(2)
    rows = []
    for model in ("judge-a", "judge-b"):
        metric = viescore(Scripted(lambda r: JudgeReply('{"score": [5, 5]}'), model), tmp_path)
        out = metric(edited, source, instruction=["a", "b"])
        settings = all_settings([metric], {"viescore": {"_target_": "x", "model": model}})
        assert set(settings) == {"viescore_sc", "viescore_pq", "viescore_o"}
        for i in range(2):
            rows.append({"viescore_o": out["viescore_o"][i].item(), "viescore_o_failed": i == 1 and model == "judge-a",
                         SETTINGS_COLUMN: row_settings(settings)})
    frame = pd.DataFrame(rows)
    values, failed = split_failed(frame, "viescore_o")
    assert failed == 1 and len(values) == 3
    with pytest.raises(ConfigError, match="viescore_o"):
        check_uniform(frame, ["viescore_o"], "run")
    check_uniform(frame.iloc[:2], ["viescore_o"], "run")  # one stack: pools


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="protocol"):
        JudgeMetric("x", "nope", Scripted(None), load_gedit_prompts(None))
    with pytest.raises(ConfigError, match="passes"):
        viescore(Scripted(None), tmp_path, passes=0)


def test_settings_hash_ignores_where_and_how_fast_the_judge_runs(tmp_path):
    """Shards on two GPUs, a resume with another batch size or cache folder: one setting;
    another judge model: another (the tables then refuse to pool)."""
    metric = viescore(Scripted(lambda r: None), tmp_path)
    node = {"_target_": "attnedit.judge.metric.JudgeMetric", "prefix": "viescore", "cache_dir": "/a",
            "prompts": {"path": "/x/vie_prompts.py"}, "backend": {"model": "m", "device": "cuda:0", "batch_size": 8}}
    moved = {**node, "cache_dir": "/b", "prompts": {"path": "/y/vie_prompts.py"},
             "backend": {"model": "m", "device": "cuda:1", "batch_size": 2}}
    other = {**node, "backend": {**node["backend"], "model": "n"}}
    first, second, third = (all_settings([metric], {"viescore": n})["viescore_o"]["hash"] for n in (node, moved, other))
    assert first == second != third
