"""A local vision-language judge through transformers (Qwen2.5-VL and its fine-tunes).

GEdit-Bench's own local judge (stepfun-ai/Step1X-Edit @ 570eba6,
GEdit-Bench/viescore/mllm_tools/qwen25vl_eval.py) asks one request at a time: the images
before the text in one user message (lines 66-73), ``set_seed(42)`` before each call (line
77), greedy decoding of at most 512 new tokens (``do_sample=False``, lines 95-102; the
model's shipped generation config, e.g. its repetition penalty, stays in force), and only
the new tokens decoded with ``skip_special_tokens=True``, ``clean_up_tokenization_spaces=False``
(lines 103-110). This backend asks the same, ``batch_size`` requests per ``generate`` call:

- LEFT padding, so every row's new tokens follow its own prompt; the pad positions then hold
  the row's first token, one its prompt already has, because the repetition penalty counts
  every input id (pads included): batched and alone see the same set of tokens;
- requests are grouped by image count and size first (less padding); replies come back in
  the order asked;
- the seed is set before each batch; temperature 0 is greedy; temperature > 0 samples with
  top-p 1 and top-k off (plain temperature sampling, as an API's temperature), since the
  released Qwen2.5-VL generation config ships top_k 1 (sampling would stay greedy);
- a batch that raises (out of memory, a bad image) is retried one request at a time; a
  request that still fails gets an ``error`` reply, never an exception.

Images: each request's PNG/JPEG bytes are decoded with PIL and converted to RGB, and the
processor resizes them within its ``min_pixels`` / ``max_pixels`` (Qwen2-VL's rule: sides
multiples of patch x merge). The official loop re-encodes each image as PNG (lines 19-28) and
lets qwen_vl_utils resize it to the same kind of grid before the processor sees it (line 82).
``use_fast`` false (default) picks the PIL image processor (``Qwen2VLImageProcessorPil`` in
transformers 5; the "slow" one of 4.x), true the torchvision one, which may change outputs.

:meth:`TransformersVLJudge.stack` records what can change a reply: model, revision, the
sha256 of the weight files (memoised in ``hash_cache`` by path, size and mtime), the config
and tokenizer files' sha256, dtype, quantisation, attention implementation, processor
classes and pixel bounds, the image processor's settings, the chat template, the effective
generation settings, the adapter and its sha256, transformers and torch versions.
``device`` and ``batch_size`` are run-time choices and stay out of it.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from attnedit.backends.loading import download_command, pick_device, pick_dtype, weight_files
from attnedit.errors import ConfigError, WeightsNotFoundError
from attnedit.judge.base import ERROR, OK, JudgeBackend, JudgeReply, JudgeRequest
from attnedit.metrics.weights import check_weights_mode

#: Files besides the weights that change what the model sees (config, tokenizer, processor, template).
CONFIG_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")
IMAGE_ENCODING = "png/jpeg bytes decoded by PIL (RGB), resized by the processor"


def _sha256_files(files: list[Path], root: Path) -> str:
    """sha256 over (relative name, bytes) of each file, in the given (sorted) order."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_sha256(folder: Path, hash_cache: Path | None = None) -> str | None:
    """sha256 of the weight files under ``folder`` (names and bytes, sorted); None when there
    are none. ``hash_cache``: a JSON memo keyed by the folder, valid while every file's
    (name, size, mtime) is unchanged: a 15 GB model is read once, not per run."""
    folder = folder.resolve()
    files = weight_files(folder)
    if not files:
        return None
    stamp = [[f.relative_to(folder).as_posix(), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    memo: dict[str, Any] = {}
    if hash_cache is not None and hash_cache.is_file():
        try:
            memo = json.loads(hash_cache.read_text())
        except (OSError, ValueError):
            memo = {}  # a damaged memo is only a lost shortcut
        entry = memo.get(str(folder))
        if isinstance(entry, dict) and entry.get("files") == stamp:
            return entry["sha256"]
    digest = _sha256_files(files, folder)
    if hash_cache is not None:
        memo[str(folder)] = {"files": stamp, "sha256": digest}
        hash_cache.parent.mkdir(parents=True, exist_ok=True)
        # tmp + replace: several judges may write the memo at once; the last complete one wins
        with tempfile.NamedTemporaryFile("w", dir=hash_cache.parent, delete=False, suffix=".tmp") as tmp:
            json.dump(memo, tmp, indent=1)
        os.replace(tmp.name, hash_cache)
    return digest


def _config_files_sha256(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in CONFIG_SUFFIXES)
    return _sha256_files(files, folder)


def resolve_folder(name: str, revision: str | None, what: str, key: str,
                   example: str = "Qwen/Qwen2.5-VL-7B-Instruct") -> Path:
    """A local folder as is; otherwise a hub id from the Hugging Face cache (or downloaded
    when online). Missing -> one WeightsNotFoundError naming ``key`` and the download."""
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    pin = f" --revision {revision}" if revision else ""
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise WeightsNotFoundError(
            f"{what}: {key}={name!r} is not an existing folder. Point {key} at a folder saved with "
            f"save_pretrained or at a hub id such as {example} "
            f"(fetch one with `{download_command('<hub id>', name)}{pin}`).")
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        return Path(snapshot_download(name, revision=revision))
    except Exception as err:  # offline, unreachable hub, gated repo, unknown revision: all end the same way
        raise WeightsNotFoundError(
            f"{what}: could not load '{name}'{f' at revision {revision}' if revision else ''} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}). It is not in the "
            f"Hugging Face cache ({HF_HUB_CACHE}) and could not be downloaded. On a machine with internet run "
            f"`{download_command(name)}{pin}` and pass {key}=<dir> (or copy the cache there)."
        ) from err


def _eos_ids(generation_config) -> set[int]:
    eos = generation_config.eos_token_id
    return set() if eos is None else {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


class TransformersVLJudge(JudgeBackend):
    """A transformers image-text-to-text model (Qwen2.5-VL family) as a judge; see the module
    docstring for what is asked and how. ``weights="random"`` builds the model from the
    folder's config with seeded random weights (tests and the GPU check only; marked in the
    stack and in every table)."""

    name = "transformers_vl"

    def __init__(self, model: str, revision: str | None = None, dtype: str = "bfloat16", device: str = "auto",
                 batch_size: int = 8, max_new_tokens: int = 512, temperature: float = 0.0, seed: int = 42,
                 min_pixels: int | None = None, max_pixels: int | None = None, use_fast: bool = False,
                 adapter: str | None = None, attn_implementation: str | None = None, weights: str = "pretrained",
                 hash_cache: str | Path | None = None) -> None:
        if int(batch_size) < 1 or int(max_new_tokens) < 1:
            raise ConfigError(f"judge backend: batch_size={batch_size} and max_new_tokens={max_new_tokens} "
                              "must both be >= 1")
        if float(temperature) < 0:
            raise ConfigError(f"judge backend: temperature={temperature} must be >= 0 (0: greedy)")
        from transformers import (AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor,
                                  GenerationConfig)

        self.model_name, self.revision, self.adapter = str(model), revision, adapter
        self.batch_size, self.max_new_tokens = int(batch_size), int(max_new_tokens)
        self.temperature, self.seed, self.use_fast = float(temperature), int(seed), bool(use_fast)
        self.weights = check_weights_mode(weights, "judge")
        self.uses_random_weights = self.weights == "random"
        self.device = pick_device(device, key="judge.backend.device")
        self.dtype = pick_dtype(dtype, self.device, gpu_default="bfloat16")
        self.folder = resolve_folder(self.model_name, revision, "judge model", "judge.backend.model")
        if not (self.folder / "config.json").is_file():
            raise WeightsNotFoundError(
                f"judge model: {self.folder} holds no config.json: not a model saved with save_pretrained. Point "
                "judge.backend.model at the model's folder or at a hub id such as Qwen/Qwen2.5-VL-7B-Instruct.")
        self._hash_cache = Path(hash_cache).expanduser() if hash_cache else None
        self._stack: dict[str, Any] | None = None

        pixels = {k: int(v) for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v is not None}
        # The image processor is loaded on its own: a backend= passed to AutoProcessor also reaches
        # the video processor, which has no PIL backend.
        image_processor = AutoImageProcessor.from_pretrained(
            self.folder, backend="torchvision" if self.use_fast else "pil", **pixels)
        self.processor = AutoProcessor.from_pretrained(self.folder, image_processor=image_processor)
        attn = {"attn_implementation": attn_implementation} if attn_implementation else {}
        if self.uses_random_weights:
            config = AutoConfig.from_pretrained(self.folder)
            torch.manual_seed(self.seed)
            with torch.device(self.device):  # built in place: a 7B model is not first made on the CPU
                net = AutoModelForImageTextToText.from_config(config, dtype=self.dtype, **attn)
            if (self.folder / "generation_config.json").is_file():
                net.generation_config = GenerationConfig.from_pretrained(self.folder)
        else:
            if not weight_files(self.folder):
                raise WeightsNotFoundError(
                    f"judge model: {self.folder} holds no weight files (*.safetensors / *.bin); put them there with "
                    f"`{download_command('<hub id>', str(self.folder))}`.")
            net = AutoModelForImageTextToText.from_pretrained(self.folder, dtype=self.dtype,
                                                              device_map=str(self.device), **attn)
        self.adapter_folder = None
        if adapter:
            from peft import PeftModel

            self.adapter_folder = resolve_folder(str(adapter), None, "judge adapter", "judge.backend.adapter",
                                                 example="EditScore/EditScore-7B")
            net = PeftModel.from_pretrained(net, str(self.adapter_folder))
        self.model = net.eval()

    # -- what can change a reply ---------------------------------------------------------------
    def generation_kwargs(self) -> dict[str, Any]:
        """What generate() is called with besides the inputs (the model's generation config fills the rest)."""
        if self.temperature == 0:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False, "num_beams": 1,
                    "temperature": None, "top_p": None, "top_k": None}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True, "num_beams": 1,
                "temperature": self.temperature, "top_p": 1.0, "top_k": 0}

    def _effective_generation(self) -> dict[str, Any]:
        config = self.model.generation_config.to_dict()
        config.update(self.generation_kwargs())
        keys = ("do_sample", "num_beams", "temperature", "top_p", "top_k", "repetition_penalty",
                "no_repeat_ngram_size", "max_new_tokens", "eos_token_id", "pad_token_id")
        return {k: config.get(k) for k in keys}

    def stack(self) -> dict[str, Any]:
        if self._stack is not None:
            return dict(self._stack)
        import transformers

        image_processor = self.processor.image_processor
        size = getattr(image_processor, "size", None)
        settings = json.dumps(image_processor.to_dict(), sort_keys=True, default=str)
        template = getattr(self.processor, "chat_template", None) or ""
        quant = getattr(self.model.config, "quantization_config", None)
        local = Path(self.model_name).expanduser().is_dir()
        base = self.model.get_base_model() if self.adapter_folder else self.model
        stack = {
            "backend": self.name,
            # a local folder is named, not located: the weights' sha256 identifies it on every machine
            "model": Path(self.model_name).name if local else self.model_name,
            "model_source": "local folder" if local else "hub",
            "revision": self.revision,
            "snapshot": self.folder.name if self.folder.parent.name == "snapshots" else None,
            "weights": self.weights,
            "random_seed": self.seed if self.uses_random_weights else None,
            "weights_sha256": None if self.uses_random_weights else weights_sha256(self.folder, self._hash_cache),
            "config_files_sha256": _config_files_sha256(self.folder),
            "model_class": type(base).__name__,
            "dtype": str(self.dtype).removeprefix("torch."),
            "quantization": quant.to_dict() if hasattr(quant, "to_dict") else quant,
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "processor_class": type(self.processor).__name__,
            "image_processor_class": type(image_processor).__name__,
            "use_fast": self.use_fast,
            "min_pixels": getattr(size, "shortest_edge", None) if size is not None else None,
            "max_pixels": getattr(size, "longest_edge", None) if size is not None else None,
            "image_processor_sha256": hashlib.sha256(settings.encode()).hexdigest(),
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest(),
            "image_encoding": IMAGE_ENCODING,
            "message": "one user turn; images before or after the text as each request says",
            "padding_side": "left",
            "temperature": self.temperature,
            "seed": self.seed,
            "max_new_tokens": self.max_new_tokens,
            "generation": self._effective_generation(),
            "adapter": (Path(str(self.adapter)).name if Path(str(self.adapter)).expanduser().is_dir()
                        else self.adapter) if self.adapter else None,
            "adapter_sha256": _sha256_files(
                sorted(set(weight_files(self.adapter_folder)) | {p for p in self.adapter_folder.iterdir()
                                                                 if p.suffix == ".json"}),
                self.adapter_folder) if self.adapter_folder else None,
            "transformers": transformers.__version__,
            "torch": torch.__version__.split("+")[0],
        }
        self._stack = stack
        return dict(stack)

    # -- answering -----------------------------------------------------------------------------
    @staticmethod
    def decode_images(request: JudgeRequest) -> list[Any]:
        """The request's images as RGB PIL images; ValueError naming the one that is not an image."""
        from PIL import Image

        images = []
        for i, image in enumerate(request.images):
            try:
                with Image.open(io.BytesIO(image.data)) as opened:
                    images.append(opened.convert("RGB"))
            except Exception as err:  # any undecodable bytes: this request's error, not the batch's
                raise ValueError(f"image {i} ({image.mime}, {len(image.data)} bytes) could not be decoded: "
                                 f"{type(err).__name__}: {err}") from err
        return images

    @staticmethod
    def messages(request: JudgeRequest) -> list[dict[str, Any]]:
        """The chat of one request: one user turn, the images before the text unless text_first."""
        images = [{"type": "image"} for _ in request.images]
        text = [{"type": "text", "text": request.text}]
        return [{"role": "user", "content": text + images if request.text_first else images + text}]

    def inputs(self, requests: list[JudgeRequest], images: list[list[Any]]):
        """The processor's left-padded batch of ``requests`` (images decoded), pads filled with a
        token each row already holds (see the module docstring), on the model's device."""
        texts = self.processor.apply_chat_template([self.messages(r) for r in requests], tokenize=False,
                                                   add_generation_prompt=True)
        flat = [image for row in images for image in row]
        batch = self.processor(text=texts, images=flat or None, padding=True, padding_side="left",
                               return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        first = mask.argmax(dim=1)  # the first real position of each (left-padded) row
        ids[:] = torch.where(mask.bool(), ids, ids.gather(1, first[:, None]))
        return batch.to(self.device)

    def _run(self, requests: list[JudgeRequest], images: list[list[Any]]) -> list[tuple[JudgeReply, list[int]]]:
        from transformers import set_seed

        batch = self.inputs(requests, images)
        set_seed(self.seed)
        with torch.inference_mode():
            out = self.model.generate(**batch, **self.generation_kwargs())
        new = out[:, batch["input_ids"].shape[1]:].cpu()
        eos = _eos_ids(self.model.generation_config)
        answers = []
        for row, prompt_tokens in zip(new.tolist(), batch["attention_mask"].sum(dim=1).tolist()):
            stop = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))  # the end token counts
            text = self.processor.batch_decode([row[:stop]], skip_special_tokens=True,
                                               clean_up_tokenization_spaces=False)[0]
            usage = {"prompt_tokens": int(prompt_tokens), "completion_tokens": stop}
            answers.append((JudgeReply(text, OK, usage=usage), row[:stop]))
        return answers

    def _order(self, requests: list[JudgeRequest], images: list[list[Any]]) -> list[int]:
        """Requests of similar image count and size together: less padding per batch."""
        def size(i: int) -> tuple[int, int, int]:
            return len(images[i]), sum(im.width * im.height for im in images[i]), len(requests[i].text)

        return sorted(range(len(requests)), key=size)

    def generate(self, requests: list[JudgeRequest]) -> list[JudgeReply]:
        return self.generate_with_ids(requests)[0]

    def generate_with_ids(self, requests: list[JudgeRequest]) -> tuple[list[JudgeReply], list[list[int] | None]]:
        """The replies and each one's generated token ids (up to and including the end token;
        None for an error): what a batched-vs-alone comparison checks."""
        answers: list[tuple[JudgeReply, list[int] | None] | None] = [None] * len(requests)
        images: list[list[Any]] = [[] for _ in requests]
        for i, request in enumerate(requests):
            try:
                images[i] = self.decode_images(request)
            except ValueError as err:
                answers[i] = (JudgeReply(None, ERROR, error=str(err).splitlines()[0]), None)
        todo = [i for i in self._order(requests, images) if answers[i] is None]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            try:
                done = self._run([requests[i] for i in chunk], [images[i] for i in chunk])
            except Exception as err:  # out of memory, a processor or model error: ask one at a time
                self._free()
                done = ([self._alone(requests[i], images[i]) for i in chunk] if len(chunk) > 1
                        else [(JudgeReply(None, ERROR, error=self._reason(err)), None)])
            for i, answer in zip(chunk, done):
                answers[i] = answer
        return [a[0] for a in answers], [a[1] for a in answers]  # type: ignore[index]

    def _alone(self, request: JudgeRequest, images: list[Any]) -> tuple[JudgeReply, list[int] | None]:
        try:
            return self._run([request], [images])[0]
        except Exception as err:  # this request's failure is its reply
            self._free()
            return JudgeReply(None, ERROR, error=self._reason(err)), None

    @staticmethod
    def _reason(err: BaseException) -> str:
        first = str(err).splitlines()[0] if str(err) else ""
        return f"{type(err).__name__}: {first}"[:300]

    def _free(self) -> None:
        """Give a failed batch's GPU memory back before the next try."""
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        self._free()
