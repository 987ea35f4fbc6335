"""Secrets: which keys are secret, redaction of keys and values, and no secret in any
file a real run writes (its run directory, Hydra's .hydra/ and multirun.yaml)."""

from __future__ import annotations

import subprocess

import pytest

from attnedit.run.secrets import is_secret_key, redact
from harness import BIN, COMMAND_ENV, run_overrides

FAKE_HF = "hf_FAKETOKENzyxwvu98765"
SECRET = "abc123XYZ"


def test_secret_names_and_redaction(monkeypatch):
    for name in ["api_key", "WANDB_API_KEY", "apiKey", "api-key", "hf_token", "HF_TOKEN",
                 "accessToken", "token", "client_secret", "secrets", "db_password", "PASSWD",
                 "logger.api_key", "+hub.token"]:
        assert is_secret_key(name), name
    for name in ["max_tokens", "num_tokens", "tokenizer", "project", "key", "alpha", "monkey"]:
        assert not is_secret_key(name), name
    monkeypatch.setenv("MY_SERVICE_TOKEN", FAKE_HF)
    monkeypatch.setenv("SHORT_TOKEN", "1")  # too short to be a real secret: never masked
    config = {"a": {"b": [{"password": 1, "keep": "1 and hf_x"}], "Token": "t"}, "n": (1, 2),
              "override": f"model.hf_token={FAKE_HF}", "text": f"see {FAKE_HF}", "max_tokens": 5}
    assert redact(config) == {"a": {"b": [{"password": "***", "keep": "1 and hf_x"}], "Token": "***"}, "n": [1, 2],
                              "override": "model.hf_token=***", "text": "see ***", "max_tokens": 5}
    assert config["a"]["Token"] == "t"  # the input is not modified


@pytest.mark.slow
def test_secrets_reach_no_file_a_run_writes(tiny_ddpm_dir, tmp_path):
    """A real (one-job multirun) run with +secret_token=... and +paths.api_key=...: the value
    is in no file under the outputs (run dir, Hydra's .hydra/ and multirun.yaml), its key is."""
    overrides = run_overrides(tmp_path, tiny_ddpm_dir, "dataset.num_samples=1", "method.directions=1",
                              "method.alphas=[0.4]", "model.num_inference_steps=2", "numerical_floor.samples=0",
                              "figures=false", f"+secret_token={SECRET}", f"+paths.api_key={SECRET}-2")
    done = subprocess.run([str(BIN / "attnedit-run"), "-m", *overrides], env=COMMAND_ENV, cwd=tmp_path, text=True,
                          capture_output=True, timeout=900)
    code, out, err = done.returncode, done.stdout, done.stderr
    assert code == 0, err[-3000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "hydra.yaml", "overrides.yaml", "multirun.yaml", "manifest.json"} <= names
    leaks = [str(p) for p in files if SECRET.encode() in p.read_bytes()]
    assert not leaks, f"the secret is written in {leaks}"
    run_config = next(p for p in files if p.name == "config.yaml" and p.parent.name != ".hydra")
    assert "secret_token: '***'" in run_config.read_text()
    assert SECRET not in out + err
