"""Tracking: a WandbLogger run in offline mode is read back from its run files.

The `.wandb` file is W&B's record log: `wandb.proto` Record messages in LevelDB log framing.
wandb 0.31 ships no Python reader for it, so `_records` decodes the framing here (checksums
are not verified; a framing error fails the test).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image

from attnedit.errors import ConfigError
from attnedit.run.tracking import NullLogger, WandbLogger, build_logger, multirun_group, multirun_name
from harness import REPO, run_overrides
from images import solid_png

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402

CONF = REPO / "conf" / "logger"
FAKE_KEY = "FAKEKEY0123456789abcdefFAKEKEY0123456789"
FAKE_HF = "hf_FAKETOKENzyxwvu98765"


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Offline W&B with every W&B directory under tmp_path and recognizable fake secrets."""
    for var, sub in [("WANDB_DIR", "wandb_root"), ("WANDB_DATA_DIR", "wandb_data"),
                     ("WANDB_CACHE_DIR", "wandb_cache"), ("WANDB_CONFIG_DIR", "wandb_config")]:
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("HF_TOKEN", FAKE_HF)
    wandb.teardown()  # the setup singleton caches the environment of its first use
    yield tmp_path
    wandb.teardown()


def _records(path: Path):
    """Record messages of a `.wandb` file: 7-byte file header, then 32 KiB blocks of chunks
    (crc32c u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B record log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # block tail too short for a chunk header is zero padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        else:
            raise AssertionError(f"bad chunk type {kind} at byte {pos}")
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _items(items) -> dict:
    """{key: value} of record items; a media value arrives as one item per field (nested_key)."""
    out: dict = {}
    for item in items:
        *parents, last = list(item.nested_key) or [item.key]
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = json.loads(item.value_json)
    return out


def _merge(into: dict, update: dict) -> None:
    """A config update into the config: nested keys (``_wandb.visualize.<chart>``) merged, not replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _read_run(root: Path) -> dict:
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    (log,) = run_dir.glob("run-*.wandb")
    run, tags, args, config, history, summary, artifacts = None, [], [], {}, [], {}, []
    for rec in _records(log):
        kind = rec.WhichOneof("record_type")
        if kind == "run":  # the first one opens the run; later ones update it (tags)
            run = rec.run if run is None else run
            tags = list(rec.run.tags) or tags
            _merge(config, _items(rec.run.config.update))
        elif kind == "environment":
            args = list(rec.environment.args) or args
        elif kind == "config":
            _merge(config, _items(rec.config.update))
        elif kind == "history":
            history.append(_items(rec.history.item))
        elif kind == "summary":
            summary.update(_items(rec.summary.update))
        elif kind == "artifact":
            artifacts.append(rec.artifact)
    return {"dir": run_dir, "run": run, "tags": tags, "args": args, "config": config,
            "history": history, "summary": summary, "artifacts": artifacts}


METRIC_WEIGHTS = json.dumps({"psnr": "none", "ssim": "none"})  # the runner writes this in every row


def _rows(tmp_path: Path):
    rows = [
        {"case_id": "s0-d0-a2", "sample_id": 0, "method": "sad", "direction": 0, "label": "smiling",
         "alpha": 2.0, "ssim": 0.8125, "psnr": 24.5, "random_backbone": True},
        {"case_id": "s1-d0-a2", "sample_id": 1, "method": "sad", "direction": 0, "label": "smiling",
         "alpha": 2.0, "ssim": 0.625, "psnr": 21.25, "random_backbone": True},
        {"case_id": "s0-d1-a2", "sample_id": 0, "method": "sad", "direction": 1, "label": "old",
         "alpha": -2.0, "ssim": 0.5, "psnr": 19.75, "random_backbone": True},
    ]
    for row in rows:
        row["metric_weights"] = METRIC_WEIGHTS
    # Like the runner's rows: image paths relative to the run directory.
    (tmp_path / "run" / "images").mkdir(parents=True, exist_ok=True)
    images = {}
    for r in rows:
        ref, edit = f"images/{r['case_id']}_ref.png", f"images/{r['case_id']}_edit.png"
        solid_png(tmp_path / "run" / ref, (200, 10, 10))
        solid_png(tmp_path / "run" / edit, (10, 200, 10))
        images[r["case_id"]] = (ref, edit)
    return rows, images


def test_offline_run_files_hold_metrics_tables_summaries_and_no_secrets(wandb_env, monkeypatch):
    tmp = wandb_env
    monkeypatch.setattr(sys, "argv", ["attnedit-run", f"+logger.api_key={FAKE_KEY}",
                                      "--hf-token", FAKE_HF, "method.alpha=2"])
    rows, images = _rows(tmp)
    config = {"method": {"name": "sad", "alpha": 2.0, "max_tokens": 77},
              "logger": {"api_key": FAKE_KEY, "project": "attnedit"},
              "hub": {"HF_TOKEN": FAKE_HF, "clientSecret": "x" * 12, "db_password": "pw"},
              "notes": [f"token={FAKE_HF}", f"saw {FAKE_KEY} here"]}
    figure = solid_png(tmp / "sweep.png", (0, 0, 255), size=(64, 32))
    frame = pd.DataFrame(rows).groupby("label")[["ssim", "psnr"]].agg(["mean", "std"])
    run_dir = tmp / "run"

    logger = WandbLogger(thumbnail_size=16, tags=["study"])
    logger.start(config, str(run_dir), "abc123", group="sweep-A", tags=["quickstart"])
    logger.log_cases(rows[:2], images)
    logger.log_cases(rows[2:], images)
    logger.log_figure("alpha_sweep/s0", figure)
    logger.log_table("per_direction", frame)
    logger.log_summary({"direction": {"smiling": {"ssim_mean": 0.71875}, "old": {"ssim_mean": 0.5}}})
    logger.finish()
    logger.finish()  # idempotent

    got = _read_run(tmp / "wandb_root")
    assert got["run"].display_name == "abc123" and got["run"].run_group == "sweep-A"
    assert got["tags"] == ["study", "quickstart", "random-backbone"]
    # Config: secret keys kept with *** as their value, secret strings masked, parameters kept.
    assert got["config"]["method"] == {"name": "sad", "alpha": 2.0, "max_tokens": 77}
    assert got["config"]["logger"] == {"api_key": "***", "project": "attnedit"}
    assert got["config"]["hub"] == {"HF_TOKEN": "***", "clientSecret": "***", "db_password": "***"}
    assert got["config"]["notes"] == ["token=***", "saw *** here"]
    assert got["args"] == ["+logger.api_key=***", "--hf-token", "***", "method.alpha=2"]

    # History: progress counters per batch (step = cases done), never a case's values or keys.
    steps = {h["_step"]: h for h in got["history"]}
    assert sorted(steps) == [2, 3]
    assert [(steps[s]["progress/cases_done"], steps[s]["progress/cases_failed"]) for s in (2, 3)] == [(2, 0), (3, 0)]
    charted = {k for h in got["history"] for k in h if not k.startswith("_")}
    assert charted == {"progress/cases_done", "progress/cases_failed", "figures/alpha_sweep/s0", "tables/per_direction",
                       "cases"}
    last = steps[len(rows)]
    assert last["figures/alpha_sweep/s0"]["_type"] == "image-file"
    assert (got["dir"] / "files" / last["figures/alpha_sweep/s0"]["path"]).is_file()
    assert not any(k.startswith(("progress/", "cases/")) for k in got["summary"])

    # Summaries: the per-direction means and the random-backbone mark.
    assert got["summary"]["direction/smiling/ssim_mean"] == 0.71875
    assert got["summary"]["direction/old/ssim_mean"] == 0.5
    assert got["summary"]["random_backbone"] is True

    # Final table: index flattened into columns, exact values.
    (table_file,) = (got["dir"] / "files" / "media" / "table" / "tables").glob("per_direction_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["label", "ssim mean", "ssim std", "psnr mean", "psnr std"]
    assert [r[:2] for r in table["data"]] == [["old", 0.5], ["smiling", 0.71875]]

    # Cases table: the HTML grid's columns (id, keys, metrics) plus thumbnails, one row per case.
    (cases_file,) = (got["dir"] / "files" / "media" / "table").glob("cases_*.table.json")
    cases = json.loads(cases_file.read_text())
    assert cases["columns"] == ["case_id", "sample_id", "method", "direction", "label", "alpha", "psnr", "ssim",
                                "reference", "edited"]
    assert [r[6:8] for r in cases["data"]] == [[r["psnr"], r["ssim"]] for r in rows]
    assert [r[0] for r in cases["data"]] == [r["case_id"] for r in rows]
    (art,) = [a for a in got["artifacts"] if a.name.endswith("-cases")]
    contents = {c.path: c.local_path for c in art.manifest.contents}
    thumbs = [p for p in contents if p.startswith("media/images/")]
    assert len(thumbs) == 2  # one red, one green image; W&B stores identical images once
    for p in thumbs:
        with Image.open(contents[p]) as im:
            assert max(im.size) == 16
    staged = json.loads(Path(contents["cases.table.json"]).read_text())
    assert len(staged["data"]) == 3
    assert all(r[-1]["_type"] == "image-file" for r in staged["data"])

    # The run directory points at the W&B run.
    (record,) = [json.loads(x) for x in (run_dir / "wandb_runs.jsonl").read_text().splitlines()]
    assert record["name"] == "abc123" and record["group"] == "sweep-A" and record["mode"] == "offline"
    assert record["id"] == got["run"].run_id

    # No secret anywhere on disk: W&B run files, staging, logs, the run directory.
    for path in tmp.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert FAKE_KEY.encode() not in blob and FAKE_HF.encode() not in blob, path


@pytest.fixture
def hydra_multirun(tmp_path, monkeypatch):
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    cfg.hydra.mode = RunMode.MULTIRUN
    cfg.hydra.sweep.dir = str(tmp_path / "results" / "hydra" / "quickstart" / "multirun_2026-01-02")
    # `attnedit-run -m experiment=quickstart method=sad,random +hub.hf_token=<a>,<b> dataset.num_samples=4`
    # with the sweeper's params {seed: 1,2,3}; this job: method=random, the second token, seed=3.
    cfg.hydra.sweeper = {"params": {"seed": "1,2,3"}}
    cfg.hydra.overrides.task = ["experiment=quickstart", "method=random", f"+hub.hf_token={FAKE_HF}",
                                "dataset.num_samples=4", "seed=3"]
    sweep = Path(cfg.hydra.sweep.dir)
    sweep.mkdir(parents=True)
    OmegaConf.save({"hydra": {"overrides": {"task": [
        "experiment=quickstart", "method=sad,random", f"+hub.hf_token=hf_OTHERTOKEN000,{FAKE_HF}",
        "dataset.num_samples=4"]}}}, sweep / "multirun.yaml")
    HydraConfig.instance().set_config(cfg)
    yield "results/hydra/quickstart/multirun_2026-01-02"
    HydraConfig.instance().cfg = None


def test_multirun_group_is_the_sweep_dir(hydra_multirun):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from omegaconf import read_write

    assert multirun_group() == hydra_multirun
    with read_write(HydraConfig.get()):
        HydraConfig.get().mode = RunMode.RUN
    assert multirun_group() is None


def test_multirun_group_outside_hydra():
    assert multirun_group() is None and multirun_name() is None


def test_multirun_name_is_the_swept_overrides_secrets_masked(hydra_multirun):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write

    assert multirun_name() == "method=random +hub.hf_token=*** seed=3"
    (Path(hydra_multirun) / "multirun.yaml").unlink()  # the sweeper's params alone
    assert multirun_name() == "seed=3"
    with read_write(HydraConfig.get()):
        HydraConfig.get().sweeper = None  # nothing says what was swept: every override
    assert multirun_name() == "experiment=quickstart method=random +hub.hf_token=*** dataset.num_samples=4 seed=3"


@pytest.mark.parametrize("explicit, passed, expected", [
    ("my-study", "from-runner", "my-study"),   # the logger's own `group` key wins
    (None, "from-runner", "from-runner"),      # then the runner's (top-level `group`)
    (None, None, "SWEEP"),                     # then the multirun sweep dir
])
def test_group_precedence_reaches_the_run(wandb_env, hydra_multirun, explicit, passed, expected):
    logger = WandbLogger(group=explicit)
    logger.start({"seed": 0}, str(wandb_env / "run"), "sig", group=passed, tags=[])
    logger.finish()
    expected = hydra_multirun if expected == "SWEEP" else expected
    run = _read_run(wandb_env / "wandb_root")["run"]
    assert run.run_group == expected
    assert run.display_name == "method=random +hub.hf_token=*** seed=3"  # the job's swept overrides
    assert FAKE_HF not in (wandb_env / "run" / "wandb_runs.jsonl").read_text()


def test_null_logger_does_nothing(tmp_path):
    rows, images = _rows(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    logger = build_logger(None)
    assert type(logger) is NullLogger
    logger.start({"api_key": FAKE_KEY}, str(tmp_path / "run"), "sig", "g", ["t"])
    logger.log_cases(rows, images)
    logger.log_figure("f", str(tmp_path / "missing.png"))
    logger.log_table("t", pd.DataFrame({"a": [1]}))
    logger.log_summary({"a": 1})
    logger.finish()
    assert sorted(tmp_path.rglob("*")) == before
    assert wandb.run is None


def test_build_logger_from_the_config_group():
    assert type(build_logger(OmegaConf.load(CONF / "none.yaml"))) is NullLogger
    node = OmegaConf.load(CONF / "wandb.yaml")
    logger = build_logger(node)
    assert isinstance(logger, WandbLogger)
    assert (logger.project, logger.mode, logger.group, logger.tags, logger.thumbnail_size,
            logger.log_images, logger.dir, logger.name, logger.entity) == \
        ("attnedit", None, None, [], 128, True, None, None, None)
    node.mode = "sometimes"
    with pytest.raises(ConfigError, match="logger.mode='sometimes'"):
        build_logger(node)
    with pytest.raises(ConfigError, match="no _target_"):
        build_logger({"project": "attnedit"})
    with pytest.raises(ConfigError, match="not an attnedit.run.tracking.Logger"):
        build_logger({"_target_": "collections.OrderedDict"})


def test_disabled_mode_writes_nothing_and_misuse_errors(wandb_env):
    rows, images = _rows(wandb_env)
    logger = WandbLogger(mode="disabled")  # explicit mode beats WANDB_MODE=offline
    with pytest.raises(RuntimeError, match="before start"):
        logger.log_cases(rows, images)
    before = sorted((wandb_env / "run").rglob("*"))
    logger.start({"seed": 0}, str(wandb_env / "run"), "sig", None, [])
    logger.log_cases(rows[:1], {rows[0]["case_id"]: (None, images[rows[0]["case_id"]][1])})
    with pytest.warns(UserWarning, match="s1-d0-a2.*nowhere.png not found"):  # save_images=false
        logger.log_cases(rows[1:2], {rows[1]["case_id"]: ("nowhere.png", "nowhere.png")})
    (_, first), (_, second) = logger._cases  # thumbnails: empty cells where no image exists
    assert first[0] is None and isinstance(first[1], wandb.Image) and second == (None, None)
    with pytest.raises(FileNotFoundError, match="figure 'f'"):
        logger.log_figure("f", str(wandb_env / "nowhere.png"))
    logger.log_table("t", pd.DataFrame({"a": [1.0]}))
    logger.finish()
    assert sorted((wandb_env / "run").rglob("*")) == before
    assert list((wandb_env / "wandb_root").iterdir()) == []


def _table(run_dir: Path, key: str) -> dict:
    """The table logged under ``key`` (W&B writes it to media/table/<key>_<step>_<hash>.table.json)."""
    (path,) = (run_dir / "files" / "media" / "table").glob(f"{key}_*.table.json")
    return json.loads(path.read_text())


def test_grid_case_table_every_tables_csv_and_failures_reach_the_offline_run(wandb_env):
    """DCAG-like rows with a failed case; CSVs planted in the tables dir (nested, new columns,
    one empty); the failures counted over the whole run's frame, not this session's rows."""
    run_dir = wandb_env / "run"
    (run_dir / "images" / "s0").mkdir(parents=True)
    solid_png(run_dir / "images" / "s0" / "reference.png", (200, 10, 10))
    solid_png(run_dir / "images" / "s0" / "edit.png", (10, 200, 10))
    (run_dir / "manifest.json").write_text(json.dumps({"metric_order": ["lpips_unedit_part", "ssim_unedit_part"]}))
    base = {"sample_id": "s0", "category": "3", "method": "dcag", "bk": 1.0, "bv": 1.0, "model": "qwen",
            "ssim_unedit_part_convention": "torchmetrics_legacy_crop", "seconds_per_case": 2.5,
            "run_signature": "abc", "reference_path": "images/s0/reference.png"}
    rows = [
        {"case_id": "s0-a", **base, "dk": 1.1, "dv": 1.0, "ssim_unedit_part": 0.75, "lpips_unedit_part": 0.125,
         "failed": False, "error": None},
        {"case_id": "s0-b", **base, "dk": 1.1, "dv": 1.15, "ssim_unedit_part": 0.5, "lpips_unedit_part": 0.25,
         "failed": False, "error": None},
        {"case_id": "s0-c", **base, "dk": 1.3, "dv": 1.3, "ssim_unedit_part": float("nan"),
         "lpips_unedit_part": float("nan"), "failed": True, "error": "NonFiniteOutputError: NaN image"},
    ]
    images = {"s0-a": ("images/s0/reference.png", "images/s0/edit.png"),
              "s0-b": ("images/s0/reference.png", "images/s0/edit.png"), "s0-c": ("images/s0/reference.png", None)}
    earlier = {**rows[2], "case_id": "s1-c", "sample_id": "s1", "error": "OutOfMemoryError: CUDA out of memory"}
    tables = run_dir / "tables"
    (tables / "per_category").mkdir(parents=True)
    (tables / "overall.csv").write_text("method,metric,mean,ci_low,ci_high,n,n_nan\n"
                                        "dcag,lpips_unedit_part,0.1875,0.125,0.25,2,0\n")
    (tables / "per_category" / "lpips.csv").write_text("category,dk,dv,mean,n\n3,1.1,1.15,0.25,1\n")
    (tables / "empty.csv").write_text("")
    (tables / "overall.md").write_text("not a table to log")

    logger = WandbLogger(thumbnail_size=8)
    logger.start({"seed": 0}, str(run_dir), "sig")
    logger.log_cases(rows, images)
    logger.log_tables_dir(str(tables))
    logger.log_failures(pd.DataFrame([earlier, *rows]))
    logger.finish()
    got = _read_run(wandb_env / "wandb_root")

    cases = _table(got["dir"], "cases")
    assert cases["columns"] == ["case_id", "sample_id", "category", "method", "dk", "dv", "lpips_unedit_part",
                                "ssim_unedit_part", "reference", "edited"]
    assert [r[:8] for r in cases["data"][:2]] == [["s0-a", "s0", "3", "dcag", 1.1, 1.0, 0.125, 0.75],
                                                  ["s0-b", "s0", "3", "dcag", 1.1, 1.15, 0.25, 0.5]]
    failed_row = cases["data"][2]
    assert failed_row[:6] == ["s0-c", "s0", "3", "dcag", 1.3, 1.3]
    assert all(math.isnan(v) for v in failed_row[6:8])
    assert failed_row[8:] == ["Image", None] and cases["data"][0][8:] == ["Image", "Image"]  # no edited image

    overall = _table(got["dir"], "tables/overall")
    assert overall["columns"] == ["method", "metric", "mean", "ci_low", "ci_high", "n", "n_nan"]
    assert overall["data"] == [["dcag", "lpips_unedit_part", 0.1875, 0.125, 0.25, 2, 0]]
    nested = _table(got["dir"], "tables/per_category/lpips")
    assert nested["columns"] == ["category", "dk", "dv", "mean", "n"] and nested["data"] == [[3, 1.1, 1.15, 0.25, 1]]
    logged = {k for h in got["history"] for k in h if k.startswith("tables/")}
    assert logged == {"tables/overall", "tables/per_category/lpips"}

    assert got["summary"]["failed_cases"] == 2
    failures = _table(got["dir"], "failures")
    assert failures["columns"] == ["case_id", "sample_id", "category", "method", "dk", "dv", "error"]
    assert failures["data"] == [["s1-c", "s1", "3", "dcag", 1.3, 1.3, "OutOfMemoryError: CUDA out of memory"],
                                ["s0-c", "s0", "3", "dcag", 1.3, 1.3, "NonFiniteOutputError: NaN image"]]


@pytest.fixture
def one_torch_thread():
    """Tiny convolutions on a shared CPU: one thread is several times faster than two."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_run_logs_every_tables_csv_its_failures_and_the_grid_columns(wandb_env, tiny_ddpm_dir, one_torch_thread):
    """The runner end to end with logger=wandb offline: each CSV attnedit-tables wrote is a
    W&B table with the same columns and values; no failures; the case table's metrics are
    the manifest's."""
    from attnedit.config import compose
    from attnedit.run.runner import Runner

    cfg = compose("config", run_overrides(wandb_env / "results", tiny_ddpm_dir, "logger=wandb", "method.directions=1",
                                          "dataset.num_samples=1", "model.num_inference_steps=2", "figures=false"))
    run_dir = Runner(cfg).run()
    got = _read_run(wandb_env / "wandb_root")
    csvs = sorted((run_dir / "tables").rglob("*.csv"))
    assert csvs
    for path in csvs:
        name = path.relative_to(run_dir / "tables").with_suffix("").as_posix()
        table, frame = _table(got["dir"], f"tables/{name}"), pd.read_csv(path)
        assert table["columns"] == list(frame.columns), name
        assert len(table["data"]) == len(frame), name
    assert got["summary"]["failed_cases"] == 0
    metrics = json.loads((run_dir / "manifest.json").read_text())["metric_order"]
    cases = _table(got["dir"], "cases")
    assert cases["columns"][-2 - len(metrics):] == [*metrics, "reference", "edited"]
    assert cases["columns"][:2] == ["case_id", "sample_id"] and "run_signature" not in cases["columns"]
    # The runner's means and the tables' per-|alpha| means are the whole summary; curves per metric.
    assert set(_scalars(got["summary"])) == {"failed_cases", *(f"mean/{m}{at}" for m in metrics
                                                                for at in ("", "/abs_alpha=0.4"))}
    assert set(got["config"]["_wandb"]["visualize"]) == {f"curves/{m}" for m in metrics}


def _scalars(summary: dict) -> dict:
    """The summary's own values: W&B's `_`-keys and media (tables, charts, images) left out."""
    return {k: v for k, v in summary.items() if not k.startswith("_") and not isinstance(v, dict)}


def test_a_finished_run_replayed_gives_tables_means_only_and_alpha_curves(wandb_env, finished_run):
    """The session's finished run (2 samples x 2 directions x alpha -0.4, 0, 0.4) replayed as
    the runner reports it: case keys only in the cases table, the summary's means against
    numpy over the rows (alpha = 0 left out, as in the tables), the per-direction means per
    alpha as a table with a line chart per metric."""
    import shutil

    import numpy as np

    from attnedit.run import runner as runner_module

    _, runner, finished = finished_run
    run_dir = wandb_env / "run"  # a copy: the session's run dir stays as it was
    shutil.copytree(finished / "tables", run_dir / "tables")
    shutil.copy(finished / "manifest.json", run_dir / "manifest.json")
    frame = runner.store.read()
    metrics = [m.name for m in runner.metrics]
    assert len(frame) == 12 and set(frame.alpha) == {-0.4, 0.0, 0.4}

    logger = WandbLogger(log_images=False)
    logger.start(runner.config, str(run_dir), runner.signature)
    for start in range(0, len(frame), 4):
        logger.log_cases(frame.iloc[start:start + 4].to_dict("records"), {})
    logger.log_tables_dir(str(run_dir / "tables"))
    logger.log_summary(runner_module._summary(frame, runner.metrics))
    logger.log_failures(frame)
    logger.finish()
    got = _read_run(wandb_env / "wandb_root")

    # Case keys are table columns, never history.
    charted = {k for h in got["history"] for k in h if not k.startswith("_")}
    assert {"progress/cases_done", "progress/cases_failed", "cases", "curves/by_alpha"} <= charted
    assert all(k.startswith(("progress/", "tables/", "curves/")) or k == "cases" for k in charted), charted
    assert max(h.get("progress/cases_done", 0) for h in got["history"]) == 12
    cases = _table(got["dir"], "cases")
    keys = [c for c in ("case_id", "sample_id", "category", "method", "direction", "label", "alpha") if c in frame]
    assert cases["columns"] == keys + metrics and {"direction", "alpha", "label"} <= set(keys)
    assert [r[cases["columns"].index("alpha")] for r in cases["data"]] == list(frame.alpha)

    # The summary: means only, each against numpy float64 over the edits' finite values.
    def mean(values) -> float:
        values = np.asarray(values, dtype=np.float64)
        return float(values[np.isfinite(values)].mean())

    edits = frame[frame.alpha != 0]
    expected = {f"mean/{m}": mean(edits[m]) for m in metrics}
    expected |= {f"mean/{m}/abs_alpha=0.4": mean(edits[edits.alpha.abs() == 0.4][m]) for m in metrics}
    summary = _scalars(got["summary"])
    assert set(summary) == set(expected) | {"failed_cases"} and summary["failed_cases"] == 0
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, rel=1e-12), key
    assert summary["mean/ssim"] != pytest.approx(mean(frame.ssim))  # the alpha = 0 rows would move it

    # Per-direction means per alpha, and one line chart of them per metric.
    curves = _table(got["dir"], "curves/by_alpha")
    stats = [f"{m}_{s}" for m in metrics for s in ("mean", "ci_low", "ci_high")]
    assert curves["columns"] == ["series", "method", "direction", "label", "alpha", "n", *stats]
    assert len(curves["data"]) == 6
    for row in map(dict, (zip(curves["columns"], r) for r in curves["data"])):
        cell = frame[(frame.direction == row["direction"]) & (frame.alpha == row["alpha"])]
        assert row["n"] == len(cell) == 2 and row["series"] == f"{row['direction']} ({row['label']})"
        for m in metrics:
            want, have = mean(cell[m]) if np.isfinite(cell[m]).any() else float("nan"), row[f"{m}_mean"]
            assert (math.isnan(want) and math.isnan(have)) or have == pytest.approx(want, rel=1e-12), (row, m)
    charts = got["config"]["_wandb"]["visualize"]
    assert set(charts) == {f"curves/{m}" for m in metrics}
    for m in metrics:
        panel = charts[f"curves/{m}"]["panel_config"]
        assert panel["panelDefId"] == "wandb/line/v0"
        assert panel["fieldSettings"] == {"x": "alpha", "y": f"{m}_mean", "stroke": "series"}
        assert f"curves/{m}_table" in json.dumps(panel["userQuery"])
        assert got["summary"][f"curves/{m}_table"]["_type"] == "table-file"
