"""The judged GEdit-Bench recipe end to end on tiny models: Qwen-Image-Edit (tiny) edits a
fake GEdit-Bench copy under DCAG, an OpenAI-compatible judge (the stub server on
127.0.0.1) scores VIEScore; rows carry the judge stack and the official subset flags, the
run's tables hold GEdit's official aggregation, and a rescore asks the judge nothing."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from attnedit.config import compose
from attnedit.run.rescore import rescore
from attnedit.run.runner import Runner
from judge_fixtures import build_gedit_copy
from qwen_tiny import save_tiny_pipeline
from stub_openai import StubOpenAI

TYPES = ("color_alter", "subject-add")


def viescore_reply(body) -> str:
    """SC from the instruction's number, PQ fixed: known answers the test recomputes."""
    content = body["messages"][0]["content"]
    images = sum(part["type"] == "image_url" for part in content)
    text = next(part["text"] for part in content if part["type"] == "text")
    if images == 1:
        return '{"score": [6, 8], "reasoning": "pq"}'
    found = re.search(r"make edit (\d+) of kind", text)
    if found is None:  # the judge's probe of the served model
        return "ok"
    return f'{{"score": [{3 + int(found[1])}, 9], "reasoning": "sc"}}'


def test_a_judged_gedit_run_rows_tables_and_a_free_rescore(tmp_path, capsys):
    copy = build_gedit_copy(tmp_path / "gedit", n_per_type=1, task_types=TYPES, languages=("en",), size=(32, 32))
    model_dir = save_tiny_pipeline(tmp_path / "tiny_qwen_image_edit")
    with StubOpenAI() as stub:
        stub.responder = viescore_reply
        overrides = [
            "experiment=gedit_dcag", "metrics=gedit_viescore", "judge=openai_http", f"judge.backend.base_url={stub.url}",
            f"judge.backend.model={stub.model}", "judge.backend.backoff_seconds=0.01", f"paths.root_dir={tmp_path}",
            f"model.path={model_dir}", "model.num_inference_steps=1", f"dataset.root={copy.root}",
            "batch_size=2", "device=cpu", "progress=false", "numerical_floor.samples=0",
        ]
        run = Runner(compose("config", overrides)).run()
        asked = len(stub.chats)
        rows = pd.read_parquet(run / "cases")
        manifest = json.loads((run / "manifest.json").read_text())
        # 2 images x 2 grid points x (SC, PQ); a call whose prompt and image bytes were asked before (two grid
        # points giving the same 8-bit edit) is the cache's; the server saw the rest and one probe
        line = re.search(r"judge viescore: (\d+) calls to the judge(?: \((\d+) probing[^)]*\))?, (\d+) cache hits, "
                         r"(\d+) misses", capsys.readouterr().out)
        calls, probes, hits, misses = (int(v or 0) for v in line.groups())
        assert len(rows) == 2 * 2 and hits + misses == 8 and calls - probes == misses == asked - 1
        # every case: SC = min of its reply's list, PQ = 6, O = sqrt(SC x PQ); the official subset flag kept
        by_key = {r["key"]: r for r in copy.rows}
        for row in rows.itertuples():
            n = int(re.search(r"make edit (\d+)", by_key[row.sample_id]["instruction"])[1])
            assert (row.viescore_sc, row.viescore_pq) == (min(3 + n, 9), 6.0)
            assert math.isclose(row.viescore_o, math.sqrt(row.viescore_sc * 6.0), rel_tol=0, abs_tol=1e-12)
            assert row.intersection_exist == by_key[row.sample_id]["Intersection_exist"]
        stacks = manifest["judge_stacks"]["viescore"]
        assert set(rows.judge_stack) == {json.dumps({"viescore": stacks["hash"]})}
        assert stacks["backend"]["served_model"] == stub.model and stacks["prompts"]["official"] is None

        # GEdit's official aggregation per grid point: type means, then their unweighted mean
        tables = (run / "tables" / "tables.md").read_text()
        assert "GEdit-Bench viescore" in tables
        # every title built from judged rows says who judged and that these prompts are not the benchmark's
        assert tables.count("ATTNEDIT'S OWN PROMPTS") >= 2 and f"judged by {stub.model}" in tables
        assert f"judge {stub.model}" in tables
        csv = next(p for p in (run / "tables").glob("viescore_dcag*dk=1.1*.csv"))
        table = pd.read_csv(csv)
        point = rows[np.isclose(rows.dk, 1.1)]
        full = table[table.subset == "full"].set_index("type")
        for task, means in point.groupby("category")[["viescore_sc", "viescore_o"]].mean().iterrows():
            assert math.isclose(full.loc[task, "SC_mean"], means.viescore_sc, abs_tol=1e-12)
            assert math.isclose(full.loc[task, "O_mean"], means.viescore_o, abs_tol=1e-12)
        assert math.isnan(full.loc["average", "SC_mean"])  # 9 of the 11 types unjudged: no average, as the official

        # a rescore of the judged columns asks the judge nothing: every reply is cached
        before = len(stub.chats)
        rescore(run, ["metrics=gedit_viescore", "judge=openai_http", f"judge.backend.base_url={stub.url}",
                      f"judge.backend.model={stub.model}"])
        assert len(stub.chats) - before == 1  # the probe of the served model only
        after = pd.read_parquet(run / "cases").set_index("case_id")
        pd.testing.assert_series_equal(after.viescore_o.sort_index(), rows.set_index("case_id").viescore_o.sort_index())
