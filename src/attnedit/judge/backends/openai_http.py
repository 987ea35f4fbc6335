"""A judge behind an OpenAI-compatible chat-completions endpoint (the OpenAI API, vLLM,
SGLang, a provider's gateway), spoken over plain HTTP with httpx.

One request is one user message whose content parts are the prompt text and each image
as a ``data:<mime>;base64,...`` URL of the request's exact bytes (never re-encoded here:
a protocol that wants JPEG encodes before building the request), text before or after the
images as ``request.text_first`` says. The body holds ``model``, ``messages``,
``temperature``, ``seed``, ``max_tokens`` and ``top_p`` only when set.

Requests run on a thread pool (``concurrency``) behind a rate limit
(``requests_per_minute``); a 429, a 5xx, a timeout or a connection error is retried
``max_retries`` times with exponential backoff (``backoff_seconds * 2**k``, capped at
``max_backoff_seconds``), waiting at least what the server's ``Retry-After`` (or OpenAI's
``retry-after-ms``) asks. Any other HTTP error is final at once: asking again cannot change
a 400 or a 401. What still fails becomes an ``error`` reply (not cached: a rerun asks
again); a declined answer (``finish_reason`` ``content_filter``, a ``refusal`` field, an
empty content, or a 400 whose ``error.code`` is ``content_policy_violation`` (OpenAI) or
``content_filter`` (Azure)) becomes a ``refusal`` reply, which the protocol counts as
failed, never fills, and which is cached: a rescore does not pay for the same refusal again.

The judge stack (:meth:`OpenAIHTTPJudge.stack`) is needed before the first call, since it
keys the reply cache, so the first ``stack()`` probes the server: GET ``/models`` for the
entry of the asked model (vLLM's ``root``: the weights it loaded under that name), GET
``/version`` (vLLM's version; tried under the base URL, then at the server's root), and one
chat completion of a few words with ``max_tokens=1``, whose ``model`` field says which model
the name resolves to now (an alias such as ``gpt-4o`` answers with its dated snapshot) and
whose ``system_fingerprint`` is kept. Every later reply must report the same served model:
one that reports another becomes an ``error`` ("served model changed"), so replies of a
drifting alias never pool under one stack. The stack's ``base_url``, ``served_root`` and
``system_fingerprint`` are recorded but not hashed (:attr:`OpenAIHTTPJudge.UNHASHED`): the
same judge is reached as localhost or 127.0.0.1, OpenAI rotates its fingerprints, a vLLM
server may load the same weights from another path; ``served_model`` and
``server_version`` are hashed.

The API key is read from ``os.environ[api_key_env]`` for each request and sent only in the
``Authorization`` header; it is never kept on the object, and any text the judge produces
(errors, log lines) has it masked, should a server echo it back. A ``base_url`` with a user
or password, a query or a fragment is refused: the URL is written as given to the run's
config files, where only secret-named keys are masked.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from attnedit.errors import ConfigError, one_line
from attnedit.judge.base import ERROR, OK, REFUSAL, JudgeBackend, JudgeReply, JudgeRequest

log = logging.getLogger(__name__)
# httpx logs every request URL at INFO, which Hydra's job log keeps: one line per judge call
logging.getLogger("httpx").setLevel(logging.WARNING)

IMAGE_DETAILS = (None, "low", "high", "auto")
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
#: The probe's prompt: any short text does; its one-token answer is not used.
PROBE_TEXT = "Reply with the word ok."
#: ``error.code`` of an HTTP 400 by which a hosted API declines the content (OpenAI, Azure):
#: the judge's answer (a refusal), not a failure to ask again.
POLICY_CODES = ("content_policy_violation", "content_filter")


class OpenAIHTTPJudge(JudgeBackend):
    """An OpenAI-compatible chat-completions judge. ``temperature`` / ``seed`` None leave
    them to the server (ImgEdit's script sends no temperature); ``image_detail`` adds
    OpenAI's ``detail`` to each image part when set.

    ``probe_calls``: the chat calls the stack's probe made (one, at the first ``stack()``):
    the one call made even when every reply is cached, since it pins which model answers."""

    name = "openai_http"
    #: Stack keys recorded but left out of its hash (attnedit.judge.stack): they change
    #: between runs of the same judge (the URL's spelling, the weights path, the fingerprint).
    UNHASHED = ("base_url", "served_root", "system_fingerprint")

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, concurrency: int = 4,
                 max_retries: int = 5, backoff_seconds: float = 1.0, requests_per_minute: float | None = None,
                 timeout_seconds: float = 120.0, temperature: float | None = 0.0, seed: int | None = 42,
                 max_tokens: int = 512, image_detail: str | None = None, top_p: float | None = None,
                 max_backoff_seconds: float = 60.0) -> None:
        self._url = _checked_url(base_url)
        if not isinstance(model, str) or not model:
            raise ConfigError("judge.backend.model must name the model to ask the server for "
                              "(e.g. judge.backend.model=gpt-4o-2024-08-06).")
        for key, value, low in (("concurrency", concurrency, 1), ("max_retries", max_retries, 0),
                                ("max_tokens", max_tokens, 1)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"judge.backend.{key}={value!r} must be an integer >= {low}.")
        positive = {"timeout_seconds": timeout_seconds, "max_backoff_seconds": max_backoff_seconds,
                    "requests_per_minute": 1 if requests_per_minute is None else requests_per_minute}
        for key, value in positive.items():
            if not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"judge.backend.{key}={value!r} must be a number > 0"
                                  + (" (or null: no limit)." if key == "requests_per_minute" else "."))
        if not isinstance(backoff_seconds, (int, float)) or backoff_seconds < 0:
            raise ConfigError(f"judge.backend.backoff_seconds={backoff_seconds!r} must be a number >= 0.")
        if image_detail not in IMAGE_DETAILS:
            raise ConfigError(f"judge.backend.image_detail={image_detail!r} must be one of low, high, auto or null.")
        if api_key_env is not None and not os.environ.get(api_key_env):
            raise ConfigError(f"judge.backend.api_key_env: the environment variable {api_key_env} is not set (or "
                              f"empty); export {api_key_env}=<your key>, or set judge.backend.api_key_env=null for a "
                              "server without a key.")
        self.base_url, self.model, self.api_key_env = str(self._url).rstrip("/"), model, api_key_env
        self.concurrency, self.max_retries = concurrency, max_retries
        self.backoff_seconds, self.max_backoff_seconds = float(backoff_seconds), float(max_backoff_seconds)
        self.timeout_seconds = float(timeout_seconds)
        self.temperature, self.seed, self.max_tokens, self.top_p = temperature, seed, max_tokens, top_p
        self.image_detail = image_detail
        self._limiter = _RateLimiter(requests_per_minute)
        self._client = httpx.Client(verify=_tls_context(), timeout=httpx.Timeout(self.timeout_seconds),
                                    limits=httpx.Limits(max_connections=concurrency,
                                                        max_keepalive_connections=concurrency))
        self._lock = threading.Lock()
        self._served: str | None = None  # the model the first reply reported
        self._fingerprint: str | None = None
        self._server: dict[str, Any] | None = None  # what the probe found (/models, /version)
        self.probe_calls = 0

    def __repr__(self) -> str:
        return f"OpenAIHTTPJudge(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    # --- the stack -------------------------------------------------------------------------

    def stack(self) -> dict[str, Any]:
        if self._server is None:
            self._server = self._probe()
        return {
            "backend": self.name,
            "base_url": self.base_url,
            "model": self.model,
            "served_model": self._served,
            "served_root": self._server["root"],
            "server_version": self._server["version"],
            "system_fingerprint": self._fingerprint,
            "temperature": self.temperature,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "image_detail": self.image_detail,
            "image_encoding": "the request's bytes unchanged, as a base64 data URL",
        }

    def _probe(self) -> dict[str, Any]:
        """What the server says about itself; the served model from one tiny chat call.
        A server that cannot be asked is a one-line error: no stack, no cache key."""
        found = {"root": None, "version": None}
        listing = self._get_json(self._endpoint("models"))
        for entry in (listing or {}).get("data") or []:
            if isinstance(entry, dict) and entry.get("id") == self.model and isinstance(entry.get("root"), str):
                found["root"] = entry["root"]
        for url in (self._endpoint("version"), self._url.copy_with(path="/version", query=None)):
            answer = self._get_json(url)
            if isinstance(answer, dict) and isinstance(answer.get("version"), str):
                found["version"] = answer["version"]
                break
        if self._served is None:
            probe = self.body(JudgeRequest(PROBE_TEXT)) | {"max_tokens": 1}
            self.probe_calls += 1
            reply = self._post(probe)
            if reply.kind == ERROR:
                raise ConfigError(f"judge: {self.base_url} did not answer a probe for model {self.model!r} "
                                  f"({reply.error}); start the server or fix judge.backend.base_url / "
                                  "judge.backend.model / the key.")
        return found

    def _get_json(self, url: httpx.URL) -> Any:
        """A GET's JSON, or None when the server has no such route or is not reachable yet
        (the probe's chat call then says what is wrong)."""
        try:
            response = self._client.get(url, headers=self._headers())
            return response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    # --- requests --------------------------------------------------------------------------

    def body(self, request: JudgeRequest) -> dict[str, Any]:
        """The chat-completions body for ``request`` (what the server receives)."""
        text = {"type": "text", "text": request.text}
        images = []
        for image in request.images:
            url = {"url": f"data:{image.mime};base64,{base64.b64encode(image.data).decode('ascii')}"}
            if self.image_detail is not None:
                url["detail"] = self.image_detail
            images.append({"type": "image_url", "image_url": url})
        content = [text, *images] if request.text_first else [*images, text]
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": content}]}
        for key in ("temperature", "seed", "max_tokens", "top_p"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        return body

    def generate(self, requests: list[JudgeRequest]) -> list[JudgeReply]:
        if not requests:
            return []
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)), thread_name_prefix="judge-http")
        try:
            return list(pool.map(lambda request: self._post(self.body(request), stop), requests))
        finally:  # after Ctrl-C / SIGTERM: queued calls are dropped, backoff waits end at once
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._client.close()

    def _post(self, body: dict[str, Any], stop: threading.Event | None = None) -> JudgeReply:
        """One chat call with the retry policy; never raises for what the network or the
        server does. ``stop`` set: no further retry."""
        stop = stop or threading.Event()
        url = self._endpoint("chat/completions")
        for retry in range(self.max_retries + 1):
            self._limiter.acquire()
            wait_at_least = 0.0
            try:
                response = self._client.post(url, json=body, headers=self._headers())
            except httpx.TimeoutException:
                reason = f"timeout ({self.timeout_seconds:g} s limit)"
            except httpx.TransportError as err:
                reason = self._mask(f"connection error ({type(err).__name__}: {one_line(err)})")
            else:
                status = response.status_code
                if status < 300:
                    return self._reply(response)
                reason = f"HTTP {status}"
                if status != 429 and status < 500:
                    code = _error_code(response) if status == 400 else None
                    if code in POLICY_CODES:
                        return JudgeReply(None, REFUSAL, self._mask(f"refused by the server ({reason} {code}): "
                                                                    f"{_server_message(response)}"))
                    return JudgeReply(None, ERROR, self._mask(f"{reason}: {_server_message(response)}"))
                wait_at_least = _retry_after(response.headers) or 0.0
            if retry == self.max_retries:
                break
            if wait_at_least > self.max_backoff_seconds:  # honoured, not waited for: give up now
                return JudgeReply(None, ERROR, f"{reason}: the server asks to wait {wait_at_least:g} s, more "
                                               f"than judge.max_backoff_seconds={self.max_backoff_seconds:g}")
            delay = max(min(self.backoff_seconds * 2**retry, self.max_backoff_seconds), wait_at_least)
            log.info("judge %s: %s; retry %d/%d in %.2f s", self.base_url, reason, retry + 1, self.max_retries, delay)
            if stop.wait(delay):
                return JudgeReply(None, ERROR, f"{reason}; cancelled before retry {retry + 1}")
        return JudgeReply(None, ERROR, f"{reason} after {self.max_retries} retries")

    def _reply(self, response: httpx.Response) -> JudgeReply:
        """A 2xx answer as a reply: ok, refusal, or error (malformed, served model changed)."""
        try:
            data = response.json()
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            return JudgeReply(None, ERROR, self._mask(f"malformed response (no choices[0].message): "
                                                      f"{one_line(response.text)[:200]!r}"))
        served = data.get("model")
        with self._lock:
            if self._served is None:
                self._served, self._fingerprint = served, data.get("system_fingerprint")
            elif served != self._served:
                return JudgeReply(None, ERROR, f"served model changed from {self._served} to {served}")
        usage = {key: value for key, value in (data.get("usage") or {}).items()
                 if key in USAGE_KEYS and isinstance(value, int)}
        content = _text_of(message.get("content"))
        finish = choice.get("finish_reason")
        if message.get("refusal"):
            return JudgeReply(str(message["refusal"]), REFUSAL, "refused by the server (message.refusal)", usage)
        if finish == "content_filter":
            return JudgeReply(content, REFUSAL, "refused by the server (finish_reason content_filter)", usage)
        if not (content or "").strip():
            return JudgeReply(content, REFUSAL, f"empty reply (finish_reason {finish})", usage)
        return JudgeReply(content, OK, None, usage)

    # --- helpers ---------------------------------------------------------------------------

    def _endpoint(self, route: str) -> httpx.URL:
        return self._url.copy_with(path=self._url.path.rstrip("/") + "/" + route)

    def _key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def _headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _mask(self, text: str) -> str:
        """``text`` with the API key masked (a server may echo what it was sent)."""
        key = self._key()
        return text.replace(key, "***") if key else text


class _RateLimiter:
    """At most ``per_minute`` requests a minute, evenly spaced (a token bucket of one
    token): each caller gets the next free slot and sleeps until it. None: no limit."""

    def __init__(self, per_minute: float | None) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


@functools.cache
def _tls_context():
    """httpx's default TLS context (certifi, SSL_CERT_FILE), built once: loading the CA
    bundle costs tens of ms per client."""
    return httpx.create_ssl_context()


def _checked_url(base_url: str) -> httpx.URL:
    """``base_url`` parsed; refused when it is no http(s) URL or holds a place for a secret
    (user and password, query, fragment): config.yaml, the manifest and Hydra's
    overrides.yaml write it as given. The message never echoes those parts."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        shown = str(base_url).split("?")[0].split("#")[0].rsplit("@", 1)[-1]
        raise ConfigError(f"judge.backend.base_url={shown!r} must be an http(s) URL such as http://localhost:8000/v1 "
                          "(the part before /chat/completions).")
    hidden = [part for part, there in (("a user or password", url.userinfo), ("a query", url.query),
                                       ("a fragment", url.fragment)) if there]
    if hidden:
        shown = str(url.copy_with(userinfo=b"", query=None, fragment=None))
        raise ConfigError(f"judge.backend.base_url={shown} holds {' and '.join(hidden)}, which the run's config files "
                          "would keep in plain text; give the URL without it and put the key in an environment "
                          "variable named by judge.backend.api_key_env (judge.backend.api_key_env=OPENAI_API_KEY).")
    return url


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asks to wait: ``retry-after-ms`` (OpenAI), else ``Retry-After``
    as seconds or an HTTP date; None when absent or unreadable."""
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return max(0.0, float(value))
            except ValueError:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (ValueError, TypeError, OverflowError):
        return None
    return None


def _error_code(response: httpx.Response) -> str | None:
    """OpenAI's ``{"error": {"code": ...}}`` of an error body, else None."""
    try:
        error = response.json().get("error")
        code = error.get("code") if isinstance(error, dict) else None
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


def _server_message(response: httpx.Response) -> str:
    """The error's message in one short line (OpenAI's ``{"error": {"message": ...}}``,
    else the body's start)."""
    try:
        error = response.json().get("error")
        text = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        text = None
    return one_line(text if isinstance(text, str) and text else response.text or response.reason_phrase)[:300]


def _text_of(content: Any) -> str | None:
    """A message's content as text (a string, or a list of text parts)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if content is None else str(content)
