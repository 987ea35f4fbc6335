"""How a benchmark asks its judge: a case becomes requests, replies become scores.

VIEScore's ``tie`` task as GEdit-Bench scores an edit (stepfun-ai/Step1X-Edit @ 570eba6,
GEdit-Bench/): the edited image converted to RGB and resized to the source's size
(test_gedit_score.py line 34; done by the runner and attnedit-judge before the metric
sees the pair), then two calls: SC with [source, edited] and the instruction
(viescore/__init__.py lines 46, 61, 64), PQ with the edited image alone (lines 47, 66).
SC = min of the SC reply's score list, PQ = min of the PQ list, O = sqrt(SC x PQ)
(lines 92-94). An unparsable reply is asked again once (lines 74-82: ``max_tries = 1``,
both calls repeated); the official second try then guesses a random integer
(viescore/utils.py ``give_up_parsing``), here the column fails instead.

ImgEdit-Basic (PKU-YuanGroup/ImgEdit @ 547185d, Benchmark/Basic/basic_bench.py): one
call per edit with the edit type's rubric, the ``<edit_prompt>`` placeholder replaced by
the instruction (lines 36-37), the text first, then the original and the edited image
(lines 42-48); the item's score is the mean of the rubric's criteria
(step1_get_avgscore.py lines 4-13; its rounding to 2 decimals is applied where the
official numbers are computed, attnedit.report.judge_tables).

A protocol reports per case ``{column: value}`` and, for a column that could not be
scored, the reason; nothing is ever filled in.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attnedit.errors import ConfigError
from attnedit.judge.base import OK, JudgeImage, JudgeReply, JudgeRequest
from attnedit.judge.parse import ParseFailure, parse_imgedit, parse_viescore
from attnedit.judge.prompts import PromptSet

#: How images reach the judge: PNG (GEdit's local Qwen2.5-VL wrapper, qwen25vl_eval.py
#: lines 19-23) or JPEG at PIL's default quality 75 (GEdit's OpenAI wrapper re-encodes
#: every image, mllm_tools/openai.py lines 27-38).
ENCODINGS = ("png", "jpeg")
#: The reason of a column that failed only because a column it is computed from failed.
DERIVED = "derived from a failed column"


def encode_image(image: Tensor, encoding: str = "png", quality: int = 75) -> JudgeImage:
    """A float CHW image in [0, 1] as the bytes the judge receives (8-bit RGB first)."""
    from PIL import Image

    array = image.detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    if encoding == "png":
        Image.fromarray(array).save(buffer, format="PNG")
        return JudgeImage(buffer.getvalue(), "image/png")
    if encoding == "jpeg":
        Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
        return JudgeImage(buffer.getvalue(), "image/jpeg")
    raise ConfigError(f"judge image_encoding={encoding!r} is not one of {ENCODINGS}")


@dataclass
class CaseScores:
    """One case's outcome: scored columns, and the failed ones with their reason."""

    values: dict[str, float]
    errors: dict[str, str]


class Protocol:
    """Turns (source, edited, instruction, category) into requests and replies into scores."""

    suffixes: tuple[str, ...] = ("",)  # the columns, as suffixes of the metric's prefix
    main: str = ""  # the suffix of the metric's main column
    reask_default: int = 0

    def __init__(self, prompts: PromptSet, text_first: bool) -> None:
        self.prompts, self.text_first = prompts, bool(text_first)

    def requests(self, source: JudgeImage, edited: JudgeImage, instruction: str, category: str | None
                 ) -> dict[str, JudgeRequest]:
        raise NotImplementedError

    def scores(self, replies: dict[str, JudgeReply]) -> CaseScores:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"protocol": type(self).__name__, "text_first": self.text_first}


def _reply_scores(reply: JudgeReply, parse) -> tuple[list[float] | None, str | None]:
    """(scores, None) for a parsed answer, (None, reason) for a refusal, error or unparsable reply."""
    if reply.kind != OK:
        return None, f"{reply.kind}: {reply.error or 'no reason given'}"
    if not (reply.text or "").strip():
        return None, "refusal: empty reply"  # GEdit's OpenAI wrapper turns a policy refusal into ""
    try:
        return parse(reply.text), None
    except ParseFailure as err:
        return None, f"unparsable: {err}"


class VIEScoreTie(Protocol):
    """GEdit-Bench's VIEScore ``tie``: SC and PQ calls, O = sqrt(SC x PQ)."""

    suffixes = ("_sc", "_pq", "_o")
    main = "_o"
    reask_default = 1  # viescore/__init__.py lines 74-82: one more try before the official guess

    def requests(self, source, edited, instruction, category):
        return {"sc": JudgeRequest(self.prompts.text_for("sc", instruction), (source, edited), self.text_first),
                "pq": JudgeRequest(self.prompts.text_for("pq", instruction), (edited,), self.text_first)}

    def scores(self, replies):
        values, errors = {}, {}
        for part in ("sc", "pq"):
            found, reason = _reply_scores(replies[part], parse_viescore)
            if found is None:
                errors[f"_{part}"] = reason
            else:
                values[f"_{part}"] = float(min(found))
        if "_sc" in values and "_pq" in values:
            values["_o"] = math.sqrt(values["_sc"] * values["_pq"])
        else:
            errors["_o"] = DERIVED
        return CaseScores(values, errors)


class ImgEditRubric(Protocol):
    """ImgEdit-Basic: the edit type's rubric, item score = mean of its criteria."""

    def requests(self, source, edited, instruction, category):
        return {"rubric": JudgeRequest(self.prompts.text_for(str(category), instruction), (source, edited),
                                       self.text_first)}

    def scores(self, replies):
        found, reason = _reply_scores(replies["rubric"], parse_imgedit)
        if found is None:
            return CaseScores({}, {"": reason})
        return CaseScores({"": sum(found) / len(found)}, {})


PROTOCOLS = {"viescore_tie": VIEScoreTie, "imgedit_rubric": ImgEditRubric}


def as_batch_images(images: Tensor) -> list[Tensor]:
    return [images[i] for i in range(images.shape[0])] if torch.is_tensor(images) else list(images)
