"""A VLM judge as a metric: ``metrics=`` and ``attnedit-rescore`` take it like any other.

Per batch of cases: every (case, pass, call) becomes a request keyed by the judge stack,
the prompt text and the exact image bytes (:func:`attnedit.judge.base.request_key`);
what the reply cache holds is served from it, the rest goes to the backend in one list
(a local model batches it, an HTTP judge sends it concurrently); answers are cached
before they are parsed, so a crash, a resume, a rescore or a second table asks the judge
nothing twice. An unparsable reply is asked again ``reask`` times (a new call: the
attempt is part of its key); what still fails makes the column NaN with
``<column>_failed`` True and the reason in ``<prefix>_error``: never a filled-in score.
``<prefix>_raw`` keeps every reply text; ``<column>_passes`` every pass's value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnedit.errors import ConfigError
from attnedit.judge.base import ERROR, JudgeBackend, JudgeReply, request_key
from attnedit.judge.cache import ReplyCache
from attnedit.judge.prompts import PromptSet
from attnedit.judge.protocols import DERIVED, ENCODINGS, PROTOCOLS, encode_image
from attnedit.judge.stack import judge_stack
from attnedit.metrics.base import MetricInfo, PairMetric

#: The row column holding ``{metric prefix: judge stack hash}`` as JSON.
STACK_COLUMN = "judge_stack"
FAILED_SUFFIX = "_failed"
#: Per-row text columns ``<prefix>_prompts`` (official | modified | attnedit-own) and ``<prefix>_judge``.
PROMPTS_SUFFIX, JUDGE_SUFFIX = "_prompts", "_judge"
#: ``<prefix>_unavailable``: a call of the case got no answer (timeout, HTTP error after the
#: retries): the runner makes the case a failed row, so a rerun asks again (errors are not cached).
UNAVAILABLE_SUFFIX = "_unavailable"


def unavailable(row: dict[str, Any], judges) -> str | None:
    """The failed-row error of a case whose judge calls got no answer, else None."""
    reasons = [f"{j.prefix}: {row.get(j.prefix + '_error')}" for j in judges if row.get(j.prefix + UNAVAILABLE_SUFFIX)]
    return f"JudgeUnavailable: {'; '.join(reasons)}" if reasons else None


def prompts_kind(official: bool | None) -> str:
    return "official" if official else "modified" if official is False else "attnedit-own"


def judge_label(stack: dict[str, Any]) -> str:
    """"<model served or asked> (stack <hash>)": who judged, in a table title."""
    backend = stack.get("backend", {})
    model = backend.get("served_model") or backend.get("model") or "?"
    random = " RANDOM test-only weights" if backend.get("weights") == "random" else ""
    return f"{model}{random} (stack {stack['hash']})"


class JudgeMetric(PairMetric):
    """Columns ``<prefix><suffix>`` of the protocol (VIEScore: _sc, _pq, _o; ImgEdit: the
    prefix alone), each with ``_failed`` and ``_passes``; ``<prefix>_error``, ``<prefix>_raw``.

    ``instruction_field``: the sample field holding the instruction (GEdit / ImgEdit:
    ``instruction``; PIE-Bench: ``editing_instruction``); ``category_field``: the field
    choosing ImgEdit's rubric."""

    higher_is_better = True
    unit = "raw"

    def __init__(self, prefix: str, protocol: str, backend: JudgeBackend, prompts: PromptSet,
                 image_encoding: str = "png", jpeg_quality: int = 75, text_first: bool = False,
                 passes: int = 1, reask: int | None = None, cache_dir: str | None = None,
                 instruction_field: str = "instruction", category_field: str = "edit_type") -> None:
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ConfigError(f"judge protocol {protocol!r} is not one of {sorted(PROTOCOLS)}")
        if image_encoding not in ENCODINGS:
            raise ConfigError(f"judge image_encoding={image_encoding!r} is not one of {ENCODINGS}")
        if int(passes) < 1:
            raise ConfigError(f"judge passes={passes} must be >= 1")
        self.protocol = PROTOCOLS[protocol](prompts, text_first)
        self.prefix, self.backend, self.prompts = prefix, backend, prompts
        self.name = prefix + self.protocol.main
        self.image_encoding, self.jpeg_quality = image_encoding, int(jpeg_quality)
        self.passes = int(passes)
        self.reask = self.protocol.reask_default if reask is None else int(reask)
        self.needs = (instruction_field,) + ((category_field,) if protocol == "imgedit_rubric" else ())
        self.instruction_field, self.category_field = instruction_field, category_field
        self.weights = "random (test-only judge)" if backend.uses_random_weights else "pretrained"
        self.stack = judge_stack(backend, prompts, self.protocol, self.describe_images(), self.passes, self.reask)
        self.cache = ReplyCache(Path(cache_dir).expanduser() if cache_dir else None, None)
        self.calls = 0
        self.errors = 0  # cases whose calls got no answer (failed rows; a rerun asks again)

    # -- what the run records -----------------------------------------------------------
    def columns(self) -> list[str]:
        return [self.prefix + s for s in self.protocol.suffixes]

    def describe_images(self) -> dict[str, Any]:
        encoding = "png" if self.image_encoding == "png" else f"jpeg quality {self.jpeg_quality}"
        return {"encoding": encoding, "resize": "edited image resized to the source's size before judging "
                "(bicubic, antialiased), 8-bit RGB", "order": "source, edited"}

    def settings_extra(self) -> dict[str, Any]:
        """Enters the column's metric settings: columns judged under two stacks never pool
        (the stack's hash; the whole stack is the manifest's ``judge_stacks``)."""
        return {"judge_stack": self.stack["hash"]}

    def bind_run(self, run_dir: Path) -> None:
        """Archive every reply this run uses in ``<run dir>/judge_replies.jsonl``."""
        self.cache = ReplyCache(self.cache.shared_dir, Path(run_dir) / "judge_replies.jsonl")

    def summary_line(self) -> str:
        stats = self.cache.stats()
        probes = int(getattr(self.backend, "probe_calls", 0) or 0)
        line = (f"judge {self.prefix}: {self.calls + probes} calls to the judge"
                f"{f' ({probes} probing the served model)' if probes else ''}, {stats['hits']} cache hits, "
                f"{stats['misses']} misses")
        if self.errors:
            line += f"; {self.errors} case(s) got no answer (failed rows: run again to ask again)"
        return line

    @classmethod
    def column_info(cls, name: str, **options) -> MetricInfo:
        return MetricInfo(name, name, "raw", 1.0, "whole", True)

    def info(self) -> MetricInfo:
        return self.column_info(self.name)

    # -- scoring ----------------------------------------------------------------------------
    def score(self, edited: Tensor, reference: Tensor, **context) -> dict[str, Any]:
        count = edited.shape[0]
        categories = list(context.get(self.category_field) or [None] * count)
        return self.judge([reference[i] for i in range(count)], [edited[i] for i in range(count)],
                          [str(v) for v in context[self.instruction_field]], categories)

    def judge(self, sources: list[Tensor], edits: list[Tensor], instructions: list[str],
              categories: list[str | None]) -> dict[str, Any]:
        """:meth:`score` of pairs of any sizes (each edited image already at its source's size):
        the columns as lists / float64 tensors, one entry per pair."""
        count = len(sources)
        sources = [encode_image(image, self.image_encoding, self.jpeg_quality) for image in sources]
        edits = [encode_image(image, self.image_encoding, self.jpeg_quality) for image in edits]
        asked = {(i, p): self.protocol.requests(sources[i], edits[i], instructions[i], categories[i])
                 for i in range(count) for p in range(self.passes)}
        replies: dict[tuple[int, int], dict[str, JudgeReply]] = {key: {} for key in asked}
        todo = {(case, part): request for case, parts in asked.items() for part, request in parts.items()}
        for attempt in range(self.reask + 1):
            answered = self._answer({k: _with(r, pass_index=k[0][1], attempt=attempt) for k, r in todo.items()})
            for (case, part), reply in answered.items():
                replies[case][part] = reply  # a re-ask's reply replaces the unparsable one (both stay cached)
            todo = {k: r for k, r in todo.items() if not _parsable(self.protocol, k[1], answered[k])}
            if not todo:
                break
        return self._columns(count, replies)

    def _answer(self, requests: dict) -> dict:
        """Replies for ``requests`` (cache first; the misses from the backend, cached as they come)."""
        digest = self.stack["cache_hash"]
        keys = {k: request_key(digest, r) for k, r in requests.items()}
        out, missing = {}, {}
        for k, key in keys.items():
            hit = self.cache.get(key)
            if hit is None:
                missing[k] = requests[k]
            else:
                out[k] = hit
        # in rounds of what the backend runs at once, each cached before the next: a kill loses one round at most
        step = max(1, int(getattr(self.backend, "batch_size", 0) or getattr(self.backend, "concurrency", 0) or 8))
        pending = list(missing)
        for begin in range(0, len(pending), step):
            chunk = pending[begin : begin + step]
            answers = self.backend.generate([missing[k] for k in chunk])
            self.calls += len(answers)
            for k, reply in zip(chunk, answers):
                self.cache.put(keys[k], reply, {"stack": digest, "metric": self.prefix, **requests[k].key_payload(),
                                                "text": None, "text_sha256": _sha(requests[k].text)})
                out[k] = reply
        return out

    def _columns(self, count: int, replies: dict) -> dict[str, Any]:
        out: dict[str, list] = {}
        for suffix in self.protocol.suffixes:
            out[self.prefix + suffix], out[self.prefix + suffix + FAILED_SUFFIX] = [], []
            out[self.prefix + suffix + "_passes"] = []
        out[self.prefix + "_error"], out[self.prefix + "_raw"] = [], []
        # what every table title built from these rows says (attnedit.report.marks.judge_marks)
        out[self.prefix + PROMPTS_SUFFIX] = [prompts_kind(self.prompts.official)] * count
        out[self.prefix + JUDGE_SUFFIX] = [judge_label(self.stack)] * count
        out[self.prefix + UNAVAILABLE_SUFFIX] = [any(reply.kind == ERROR for p in range(self.passes)
                                                     for reply in replies[(i, p)].values()) for i in range(count)]
        self.errors += sum(out[self.prefix + UNAVAILABLE_SUFFIX])
        for i in range(count):
            per_pass = [self.protocol.scores(replies[(i, p)]) for p in range(self.passes)]
            errors = []
            for suffix in self.protocol.suffixes:
                values = [s.values.get(suffix, math.nan) for s in per_pass]
                failed = any(suffix in s.errors for s in per_pass)
                column = self.prefix + suffix
                out[column].append(math.nan if failed else sum(values) / len(values))
                out[column + FAILED_SUFFIX].append(failed)
                out[column + "_passes"].append(json.dumps(values))
            for p, scored in enumerate(per_pass):
                where = f"pass {p} " if self.passes > 1 else ""
                errors += [f"{where}{(suffix.lstrip('_') or 'score').upper()}: {reason}"
                           for suffix, reason in scored.errors.items() if reason != DERIVED]
            out[self.prefix + "_error"].append("; ".join(errors) or None)
            out[self.prefix + "_raw"].append(json.dumps(
                [{part: reply.text if reply.kind != "error" else None for part, reply in replies[(i, p)].items()}
                 for p in range(self.passes)]))
        tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()
                   if not k.endswith(("_passes", "_error", "_raw", FAILED_SUFFIX, PROMPTS_SUFFIX, JUDGE_SUFFIX,
                                      UNAVAILABLE_SUFFIX))}
        return {**out, **tensors}

    def close(self) -> None:
        self.backend.close()


def _with(request, **changes):
    from dataclasses import replace

    return replace(request, **changes)


def _parsable(protocol, part: str, reply: JudgeReply) -> bool:
    """Whether a reply needs no re-ask: parsed, or a refusal / error (asking again is the
    backend's retry policy, not a re-ask of an answer)."""
    from attnedit.judge.protocols import _reply_scores
    from attnedit.judge.parse import parse_imgedit, parse_viescore

    if reply.kind != "ok":
        return True
    parse = parse_imgedit if part == "rubric" else parse_viescore
    return _reply_scores(reply, parse)[0] is not None


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
