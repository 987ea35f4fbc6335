"""The judge interfaces: what is sent (:class:`JudgeRequest`), what comes back
(:class:`JudgeReply`) and who answers (:class:`JudgeBackend`).

A request holds the exact bytes of each image as the judge receives them, so the reply
cache (:mod:`attnedit.judge.cache`) keys a call by what the judge saw, not by a file
name. A backend answers a list of requests at once (a local model batches them, an
HTTP judge sends them concurrently) and never raises for one request's failure: that
request's reply says ``kind="error"`` (a timeout, an HTTP error after the retries) or
``kind="refusal"`` (the server declined), with the reason, and the protocol counts the
case as failed, never fills it.
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

#: Reply kinds. ``ok`` and ``refusal`` are answers of the judge and are cached; ``error``
#: (timeout, connection or HTTP error after the retries) is not: a rerun asks again.
OK, REFUSAL, ERROR = "ok", "refusal", "error"


@dataclass(frozen=True)
class JudgeImage:
    """One image exactly as sent: encoded bytes and their MIME type."""

    data: bytes
    mime: str = "image/png"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class JudgeRequest:
    """One judge call: the full prompt text (placeholders already filled) and the images.

    ``text_first``: the message puts the text before the images (ImgEdit's script, GEdit's
    OpenAI wrapper) or after them (GEdit's local Qwen2.5-VL wrapper). ``pass_index`` tells
    repeated passes apart (``judge.passes`` > 1 with temperature > 0), ``attempt`` a re-ask
    of an unparsable reply; both are part of the cache key."""

    text: str
    images: tuple[JudgeImage, ...] = ()
    text_first: bool = False
    pass_index: int = 0
    attempt: int = 0

    def key_payload(self) -> dict[str, Any]:
        """What identifies the call besides the judge stack (the cache key's other half)."""
        return {
            "text": self.text,
            "images": [[image.mime, image.sha256] for image in self.images],
            "text_first": self.text_first,
            "pass_index": self.pass_index,
            "attempt": self.attempt,
        }


@dataclass
class JudgeReply:
    """A backend's answer to one request. ``text``: the raw reply (None for errors);
    ``kind``: ok | refusal | error; ``error``: the reason, one line; ``usage``: token
    counts when known (prompt_tokens, completion_tokens); ``cached``: served from the cache."""

    text: str | None
    kind: str = OK
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "kind": self.kind, "error": self.error, "usage": dict(self.usage)}

    @classmethod
    def from_json(cls, data: dict[str, Any], cached: bool = False) -> "JudgeReply":
        return cls(data.get("text"), data.get("kind", OK), data.get("error"), dict(data.get("usage") or {}), cached)


class JudgeBackend(abc.ABC):
    """Answers judge requests. ``stack()`` says everything about the judge that can change
    a reply (model id and revision or dated snapshot, weights hash or served model and
    server version, dtype, quantisation, image processor and its pixel bounds, how images
    are encoded, temperature, seed, max new tokens); :mod:`attnedit.judge.stack` hashes it
    with the prompt set's hash. ``uses_random_weights``: a test-only judge."""

    name: str = "judge"
    uses_random_weights: bool = False

    @abc.abstractmethod
    def stack(self) -> dict[str, Any]:
        """The judge's facts (JSON-serialisable; no secret ever)."""

    @abc.abstractmethod
    def generate(self, requests: list[JudgeRequest]) -> list[JudgeReply]:
        """One reply per request, in order; per-request failures are replies, not raises."""

    def close(self) -> None:
        """Release connections / memory (optional)."""


def stack_hash(stack: dict[str, Any]) -> str:
    """A short, stable hash of a judge stack (key-sorted JSON)."""
    return hashlib.sha256(json.dumps(stack, sort_keys=True, default=str).encode()).hexdigest()[:16]


def request_key(stack_digest: str, request: JudgeRequest) -> str:
    """The cache key of one call: sha256 of (judge stack hash, prompt text, image bytes,
    message order, pass, attempt)."""
    payload = json.dumps({"stack": stack_digest, **request.key_payload()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()
