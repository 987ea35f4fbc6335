"""The local transformers judge on a tiny random Qwen2.5-VL saved with save_pretrained
(tests/support/tiny_qwen_vl.py), loaded through the judge's own code like a real model.

The batched replies are checked against GEdit's official form of the call: one request at
a time, model.generate on the processor's output, only the new tokens kept (here written
out directly with transformers, not through the judge)."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_qwen_vl import tiny_qwen_vl_dir

from attnedit.errors import WeightsNotFoundError, explain
from attnedit.judge.backends.transformers_vl import TransformersVLJudge, weights_sha256
from attnedit.judge.base import ERROR, OK, JudgeImage, JudgeRequest, stack_hash

NEW_TOKENS = 10


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_qwen_vl_dir(tmp_path_factory.mktemp("judge_vl"))


@pytest.fixture(scope="module")
def judge(model_dir, tmp_path_factory):
    memo = tmp_path_factory.mktemp("judge_vl_memo") / "weight_hashes.json"
    return TransformersVLJudge(str(model_dir), dtype="float32", device="cpu", batch_size=3,
                               max_new_tokens=NEW_TOKENS, seed=7, hash_cache=memo)


def png(width: int, height: int, seed: int, fmt: str = "PNG") -> JudgeImage:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return JudgeImage(buffer.getvalue(), "image/png" if fmt == "PNG" else "image/jpeg")


# Different image counts and sizes, prompt lengths and message orders: the rows of one batch
# get different amounts of left padding.
REQUESTS = [
    JudgeRequest("Score the edit of the first image into the second one, with reasons.",
                 (png(64, 48, 1), png(90, 90, 2))),
    JudgeRequest("short", (png(120, 40, 3, "JPEG"),), text_first=True),
    JudgeRequest("a prompt of middling length", (png(56, 56, 4), png(30, 80, 5))),
]


def official_inputs(processor, request):
    """The processor's input for one request as GEdit's Qwen2.5-VL wrapper builds it (one user
    turn; images first unless text_first), written with transformers directly."""
    images = [{"type": "image"}] * len(request.images)
    text = [{"type": "text", "text": request.text}]
    messages = [{"role": "user", "content": text + images if request.text_first else images + text}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    pictures = [Image.open(io.BytesIO(image.data)).convert("RGB") for image in request.images]
    return processor(text=[prompt], images=pictures, padding=True, return_tensors="pt")


def official_loop(model_dir, requests):
    """One request at a time, model.generate per request, the new tokens kept: (generated ids
    up to the end token, prompt ids) per request."""
    from transformers import AutoProcessor, GenerationConfig, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_dir, use_fast=False)
    end = set(GenerationConfig.from_pretrained(model_dir).eos_token_id)
    results = []
    for request in requests:
        inputs = official_inputs(processor, request)
        torch.manual_seed(7)
        out = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
        ids = out[0, inputs["input_ids"].shape[1]:].tolist()
        cut = next((i + 1 for i, t in enumerate(ids) if t in end), len(ids))
        results.append((ids[:cut], inputs["input_ids"][0].tolist()))
    return results


def test_a_batch_gives_the_official_one_at_a_time_tokens(judge, model_dir):
    replies, ids = judge.generate_with_ids(REQUESTS)
    expected = official_loop(model_dir, REQUESTS)
    assert ids == [tokens for tokens, _ in expected]
    assert len({len(t) for t in ids} | {tuple(t) for t in ids}) > 1  # the rows differ: a real comparison
    for reply, (tokens, prompt) in zip(replies, expected):
        assert reply.kind == OK and isinstance(reply.text, str) and reply.error is None
        assert reply.usage == {"prompt_tokens": len(prompt), "completion_tokens": len(tokens)}
        text = judge.processor.batch_decode([tokens], skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
        assert reply.text == text


def test_each_row_is_its_prompt_left_padded_with_tokens_it_already_holds(judge, model_dir):
    """The repetition penalty counts every input id, pads included: a pad must be a token the
    prompt has anyway, or a batched row is penalised differently from the same request alone."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, use_fast=False)
    batch = judge.inputs(REQUESTS, [judge.decode_images(r) for r in REQUESTS])
    for ids, mask, request in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), REQUESTS):
        prompt = official_inputs(processor, request)["input_ids"][0].tolist()
        pads = len(ids) - len(prompt)
        assert mask == [0] * pads + [1] * len(prompt) and ids[pads:] == prompt
        assert set(ids) == set(prompt)
    assert batch["attention_mask"].min() == 0  # some row was padded


def test_a_failing_request_is_an_error_reply_and_the_others_still_answer(judge):
    broken = JudgeRequest("x", (JudgeImage(b"not an image"),))
    extreme = JudgeRequest("y", (png(600, 2, 6),))  # aspect ratio > 200: the processor refuses, the batch fails
    replies = judge.generate([broken, REQUESTS[1], extreme])
    assert [r.kind for r in replies] == [ERROR, OK, ERROR]
    assert "image 0" in replies[0].error and replies[0].text is None
    assert replies[2].error.startswith("ValueError") and "\n" not in replies[2].error
    assert replies[1].text == judge.generate([REQUESTS[1]])[0].text  # answered alone after the batch failed


def file_sha256(folder, names):
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def test_the_stack_names_everything_that_can_change_a_reply(judge, model_dir):
    stack = judge.stack()
    assert stack["weights_sha256"] == file_sha256(model_dir, ["model.safetensors"])
    assert stack["model"] == "tiny_qwen_vl" and stack["weights"] == "pretrained" and not judge.uses_random_weights
    assert stack["processor_class"] == "Qwen2_5_VLProcessor"
    assert stack["image_processor_class"] == "Qwen2VLImageProcessorPil" and stack["use_fast"] is False
    assert (stack["min_pixels"], stack["max_pixels"]) == (28 * 28 * 4, 28 * 28 * 16)
    assert stack["generation"]["do_sample"] is False and stack["generation"]["repetition_penalty"] == 1.05
    assert stack["dtype"] == "float32" and stack["quantization"] is None and stack["adapter"] is None
    for key in ("revision", "config_files_sha256", "attn_implementation", "image_processor_sha256",
                "chat_template_sha256", "image_encoding", "temperature", "seed", "max_new_tokens", "transformers"):
        assert key in stack
    json.dumps(stack)


def test_the_weights_hash_is_memoised_by_name_size_and_mtime(model_dir, tmp_path):
    memo = tmp_path / "memo.json"
    real = weights_sha256(model_dir, memo)
    entry = json.loads(memo.read_text())[str(model_dir.resolve())]
    memo.write_text(json.dumps({str(model_dir.resolve()): {**entry, "sha256": "from-the-memo"}}))
    assert weights_sha256(model_dir, memo) == "from-the-memo"
    stale = {**entry, "files": [[n, s + 1, m] for n, s, m in entry["files"]], "sha256": "stale"}
    memo.write_text(json.dumps({str(model_dir.resolve()): stale}))
    assert weights_sha256(model_dir, memo) == real


def test_fast_processor_random_weights_and_a_lora_adapter_change_the_stack(judge, model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    lora = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    lora.save_pretrained(tmp_path / "lora")
    options = {"dtype": "float32", "device": "cpu", "max_new_tokens": NEW_TOKENS, "seed": 7}
    adapted = TransformersVLJudge(str(model_dir), adapter=str(tmp_path / "lora"), **options)
    stack = adapted.stack()
    files = ["adapter_config.json", "adapter_model.safetensors"]  # what peft loads (not its README)
    assert stack["adapter"] == "lora" and stack["adapter_sha256"] == file_sha256(tmp_path / "lora", files)
    assert stack["model_class"] == "Qwen2_5_VLForConditionalGeneration"
    assert adapted.generate_with_ids(REQUESTS[1:2])[1] != judge.generate_with_ids(REQUESTS[1:2])[1]

    fast = TransformersVLJudge(str(model_dir), use_fast=True, **options).stack()
    assert fast["image_processor_class"] == "Qwen2VLImageProcessor"
    random = TransformersVLJudge(str(model_dir), weights="random", **options)
    assert random.uses_random_weights and random.stack()["weights"] == "random"
    assert random.stack()["weights_sha256"] is None
    hashes = {stack_hash(s) for s in (judge.stack(), stack, fast, random.stack())}
    assert len(hashes) == 4


@pytest.mark.parametrize("name", ["/no/such/judge_model", "Qwen/NoSuchJudgeModel", "empty folder"])
def test_a_missing_model_is_one_line_naming_it_and_the_fix(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if name == "empty folder":
        name = str(tmp_path)
    with pytest.raises(WeightsNotFoundError) as caught:
        TransformersVLJudge(name, device="cpu")
    line = explain(caught.value)
    assert "\n" not in line and name in line and "judge.backend.model" in line
    assert ("hf download" in line) != (name == str(tmp_path))


def test_sampling_is_seeded_before_each_batch(model_dir, judge):
    sampled = TransformersVLJudge(str(model_dir), dtype="float32", device="cpu", max_new_tokens=NEW_TOKENS, seed=7,
                                  temperature=5.0)
    first = sampled.generate_with_ids(REQUESTS)[1]
    assert sampled.generate_with_ids(REQUESTS)[1] == first
    assert first != judge.generate_with_ids(REQUESTS)[1]  # it does sample
    assert sampled.stack()["generation"]["do_sample"] is True


def test_the_tiny_judge_through_the_metric_fails_every_column_and_fills_none(judge, tmp_path):
    """The real judge class on random weights answers nonsense: every VIEScore column fails
    as unparsable, NaN, with the raw replies kept; nothing is filled in."""
    import json

    import torch

    from attnedit.judge.metric import JudgeMetric
    from attnedit.judge.prompts import load_gedit_prompts

    metric = JudgeMetric("viescore", "viescore_tie", judge, load_gedit_prompts(None), cache_dir=str(tmp_path),
                         reask=0)
    g = torch.Generator().manual_seed(0)
    source, edited = torch.rand(2, 3, 28, 28, generator=g), torch.rand(2, 3, 28, 28, generator=g)
    out = metric(edited, source, instruction=["make it red", "add a hat"])
    assert torch.isnan(out["viescore_o"]).all() and all(out["viescore_sc_failed"]) and all(out["viescore_pq_failed"])
    assert all("unparsable" in e for e in out["viescore_error"])
    raw = [json.loads(r)[0] for r in out["viescore_raw"]]
    assert all(isinstance(r["sc"], str) and isinstance(r["pq"], str) for r in raw)
    assert out["viescore_judge"][0].startswith("tiny_qwen_vl (stack ")  # who judged, in every title
