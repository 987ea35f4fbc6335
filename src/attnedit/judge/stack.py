"""The judge stack: everything that can change a judge's reply, recorded with every
judged column and hashed into its cache keys and its metric settings.

Judged numbers drift without anyone changing the edited images: the model behind an API
alias, the image processor (fast or slow), its pixel bounds, re-encoding of the images,
message order, temperature, the prompt text, how failures are handled
(reference/judges.md). A column's stack is the backend's own facts
(:meth:`attnedit.judge.base.JudgeBackend.stack`) plus the prompt set (its hash, its file,
whether that file is the benchmark's official one), the protocol, how images were
prepared, the number of passes and re-asks. Two stacks, two hashes: tables refuse to
average a column whose rows carry two (``metric_settings``, attnedit.metrics.settings).
"""

from __future__ import annotations

from typing import Any

from attnedit.judge.base import JudgeBackend, stack_hash
from attnedit.judge.prompts import PromptSet


def judge_stack(backend: JudgeBackend, prompts: PromptSet, protocol: Any, images: dict[str, Any],
                passes: int, reask: int) -> dict[str, Any]:
    """The stack of one judged column set, with its ``hash``."""
    stack = {
        "backend": backend.stack(),
        "prompts": prompts.describe(),
        "protocol": protocol.describe(),
        "images": images,
        "passes": int(passes),
        "reask_unparsable": int(reask),
    }
    # Recorded, not hashed: where the prompt file lies (the same words judge alike anywhere) and
    # what a backend declares volatile (an HTTP judge's URL, a server's weights path, its fingerprint).
    hashed = {**stack, "prompts": {k: v for k, v in stack["prompts"].items() if k not in ("source", "label")},
              "backend": {k: v for k, v in stack["backend"].items() if k not in getattr(backend, "UNHASHED", ())}}
    stack["hash"] = stack_hash(hashed)
    # The cache key leaves passes and re-asks out (each call's pass and attempt are in its key):
    # judge.passes=1 -> 4 reuses pass 0's replies.
    stack["cache_hash"] = stack_hash({k: v for k, v in hashed.items() if k not in ("passes", "reask_unparsable")})
    return stack


def stack_notes(stack: dict[str, Any]) -> list[str]:
    """Short notes for a table title: the judge model, and whose prompts."""
    backend, prompts = stack.get("backend", {}), stack.get("prompts", {})
    model = backend.get("served_model") or backend.get("model") or "?"
    notes = [f"judge {model} (stack {stack.get('hash', '?')})"]
    if prompts.get("official") is None:
        notes.append("ATTNEDIT'S OWN PROMPTS, not the benchmark's: numbers not comparable to published ones")
    elif prompts.get("official") is False:
        notes.append(f"PROMPT FILE DIFFERS from the official one (sha256 {str(prompts.get('sha256'))[:12]})")
    else:
        notes.append(f"official prompts (sha256 {str(prompts.get('sha256'))[:12]})")
    if backend.get("weights") == "random":
        notes.append("RANDOM test-only judge weights")
    return notes
