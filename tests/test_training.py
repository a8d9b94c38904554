"""Training, evaluation, feature cache, LoRA and the CLI on tiny models and synthetic clips."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoProcessor,
    ConvNextImageProcessor,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    ResNetConfig,
    ResNetModel,
    Seq2SeqTrainingArguments,
    set_seed,
)
from transformers.utils import logging as hf_logging

from tests.tiny import TINY_VISION
from vidgpt2 import VidGPT2ForConditionalGeneration, VidGPT2Processor, VidGPT2VideoProcessor
from vidgpt2.cli import main as cli_main
from vidgpt2.data import load_captions_files, write_synthetic_dataset
from vidgpt2.data.collator import VideoCaptionCollator
from vidgpt2.data.feature_cache import FeatureCache, extract_features, iter_samples
from vidgpt2.tokenization import build_word_level_tokenizer
from vidgpt2.training import (
    DataArguments,
    LoraArguments,
    ModelArguments,
    apply_lora,
    build_model_and_processor,
    evaluate_dataset,
    run_training,
)

TINY_CONFIG = {
    "vision_config": TINY_VISION,
    "text_config": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64},
    "num_frames": 4,
    "image_size": 32,
    "freeze_vision": True,
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_train=24, num_validation=6, num_test=6, num_frames=4, size=32, seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


@pytest.fixture(scope="module")
def backbones(synth, tmp_path_factory) -> tuple[str, str]:
    """A tiny "pretrained" ResNet (with its image processor) and GPT-2 (with a word-level tokenizer of the synthetic
    captions), saved like Hub checkpoints: what `--vision-model` / `--text-model` load."""
    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(123)
    ResNetModel(ResNetConfig(**TINY_VISION)).save_pretrained(root / "resnet")
    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(root / "resnet")
    tokenizer = build_word_level_tokenizer(load_captions_files(train_file=str(synth / "train.jsonl"))["train"]["caption"])
    gpt2 = GPT2Config(
        n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(gpt2).save_pretrained(root / "gpt2")
    tokenizer.save_pretrained(root / "gpt2")
    return str(root / "resnet"), str(root / "gpt2")


def _backbone_args(backbones: tuple[str, str], **overrides) -> ModelArguments:
    return ModelArguments(vision_model=backbones[0], text_model=backbones[1], num_frames=4, image_size=32, **overrides)


def _args(out: Path, **overrides) -> Seq2SeqTrainingArguments:
    kwargs = dict(
        output_dir=str(out),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        max_steps=6,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    kwargs.update(overrides)
    return Seq2SeqTrainingArguments(**kwargs)


def _data(synth: Path, **overrides) -> DataArguments:
    kwargs = dict(
        train_file=str(synth / "train.jsonl"),
        validation_file=str(synth / "validation.jsonl"),
        test_file=str(synth / "test.jsonl"),
        max_caption_length=16,
    )
    kwargs.update(overrides)
    return DataArguments(**kwargs)


def _tiny_model_and_processor(synth: Path, config_file: Path):
    captions = load_captions_files(train_file=str(synth / "train.jsonl"))["train"]["caption"]
    torch.manual_seed(0)
    return build_model_and_processor(ModelArguments(config=str(config_file), build_tokenizer=True), captions, 16)


# --- collator and feature cache ----------------------------------------------------------------------------------------
def test_collator_stacks_videos_and_pads_labels(synth, config_file):
    _, processor = _tiny_model_and_processor(synth, config_file)
    rows = list(load_captions_files(train_file=str(synth / "train.jsonl"))["train"].select(range(3)))
    batch = VideoCaptionCollator(processor)(rows)
    assert batch["pixel_values_videos"].shape == (3, 4, 3, 32, 32)
    lengths = [len(processor.tokenizer(r["caption"], add_special_tokens=False)["input_ids"]) + 1 for r in rows]
    assert batch["labels"].shape == (3, max(lengths))
    for row_labels, length in zip(batch["labels"], lengths):
        assert row_labels[length - 1] == processor.tokenizer.eos_token_id
        assert torch.all(row_labels[length:] == -100)
    blank = VideoCaptionCollator(processor, blank_video=True)(rows)
    assert torch.count_nonzero(blank["pixel_values_videos"]) == 0


def test_feature_cache_gives_the_same_loss_as_pixels_and_resumes(synth, config_file, tmp_path):
    model, processor = _tiny_model_and_processor(synth, config_file)
    model.eval()
    train = load_captions_files(train_file=str(synth / "train.jsonl"))["train"]
    cache = extract_features(model, processor, iter_samples(train), tmp_path / "cache", batch_size=5, show_progress=False)
    files = sorted(cache.features_dir.glob("*.safetensors"))
    assert len(files) == len(set(train["video"]))
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    extract_features(model, processor, iter_samples(train), tmp_path / "cache", show_progress=False)
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes, "a rerun must skip cached clips"
    cache.check_compatible(model)

    rows = list(train.select(range(4)))
    from_pixels = model(**VideoCaptionCollator(processor)(rows))
    from_cache = model(**VideoCaptionCollator(processor, cache)(rows))
    assert torch.allclose(from_pixels.loss, from_cache.loss, atol=1e-5)

    other, _ = _tiny_model_and_processor(synth, config_file)
    with torch.no_grad():
        other.encoder.vision_tower.embedder.embedder.convolution.weight.add_(1.0)
    with pytest.raises(ValueError, match="different vision tower"):
        FeatureCache(tmp_path / "cache").check_compatible(other)


def test_feature_cache_read_of_unknown_clip_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        FeatureCache(tmp_path).read("nope.mp4")


# --- training ---------------------------------------------------------------------------------------------------------
def test_from_scratch_run_lowers_loss_and_saves_a_loadable_folder(synth, config_file, tmp_path, caplog):
    out = tmp_path / "run"
    hf_logging.enable_propagation()  # transformers' records reach caplog
    try:
        with caplog.at_level(logging.WARNING):
            metrics = run_training(
                ModelArguments(config=str(config_file), build_tokenizer=True),
                _data(synth),
                LoraArguments(),
                _args(out, max_steps=25, learning_rate=5e-3),
            )
    finally:
        hf_logging.disable_propagation()
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 * 0.8, losses
    assert "Both `max_new_tokens`" not in caplog.text  # not once per evaluation batch (KeepMaxNewTokens)
    for key in ("eval_bleu_4", "eval_cider", "eval_rouge_l", "test_bleu_4", "test_cider"):
        assert key in metrics
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["test_cider"] == metrics["test_cider"]
    model = AutoModel.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert isinstance(model, VidGPT2ForConditionalGeneration) and isinstance(processor, VidGPT2Processor)
    assert model.config.text_config.vocab_size == len(processor.tokenizer)


def test_training_step_changes_trainable_parameters_only(synth, config_file, tmp_path):
    model, processor = _tiny_model_and_processor(synth, config_file)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    from transformers import Seq2SeqTrainer

    train = load_captions_files(train_file=str(synth / "train.jsonl"))["train"]
    args = _args(tmp_path, max_steps=2, remove_unused_columns=False)
    Seq2SeqTrainer(model=model, args=args, train_dataset=train, data_collator=VideoCaptionCollator(processor)).train()
    for name, param in model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        assert changed == param.requires_grad, f"{name}: requires_grad={param.requires_grad}, changed={changed}"
    for name, buffer in model.named_buffers():
        if "vision_tower" in name:
            assert torch.equal(buffers[name], buffer), f"frozen batch-norm statistic {name} changed"


def test_gradient_accumulation_loss_matches_a_full_batch(synth, config_file):
    """num_items_in_batch: two half batches of unequal caption lengths sum to the full-batch gradient."""
    model, processor = _tiny_model_and_processor(synth, config_file)
    model.eval()  # no dropout
    rows = list(load_captions_files(train_file=str(synth / "train.jsonl"))["train"].select(range(4)))
    full = VideoCaptionCollator(processor)(rows)
    n_items = int((full["labels"] != -100).sum())
    model(**full).loss.backward()
    expected = model.encoder.projection.weight.grad.clone()
    model.zero_grad()
    for half in (rows[:2], rows[2:]):
        model(**VideoCaptionCollator(processor)(half), num_items_in_batch=n_items).loss.backward()
    assert torch.allclose(model.encoder.projection.weight.grad, expected, atol=1e-6)


def test_resume_from_checkpoint(synth, config_file, tmp_path):
    out = tmp_path / "resume"
    common = dict(save_strategy="steps", save_steps=3)
    run_training(
        ModelArguments(config=str(config_file), build_tokenizer=True),
        _data(synth, validation_file=None, test_file=None),
        LoraArguments(),
        _args(out, max_steps=3, **common),
    )
    assert (out / "checkpoint-3").is_dir()
    run_training(
        ModelArguments(config=str(config_file), build_tokenizer=True),
        _data(synth, validation_file=None, test_file=None),
        LoraArguments(),
        _args(out, max_steps=6, resume_from_checkpoint=str(out / "checkpoint-3"), **common),
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps[0] == 1 and steps[-1] == 6


def test_lora_train_save_reload_generate_and_merge(synth, config_file, tmp_path):
    from peft import PeftModel

    model, processor = _tiny_model_and_processor(synth, config_file)
    fresh = {n for n, _ in model.encoder.named_parameters() if not n.startswith("vision_tower.")}
    peft_model = apply_lora(model, LoraArguments(lora=True, lora_rank=4, lora_alpha=8, lora_dropout=0.0))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("crossattention.c_attn.lora_A" in n for n in names) and any(".attn.c_attn.lora_A" in n for n in names)
    # every fresh visual-token parameter (all of the encoder but the ResNet) trains fully, beside the adapters
    trained = {n.split("encoder.", 1)[1].replace("modules_to_save.default.", "") for n in names if "encoder." in n}
    assert fresh <= trained, sorted(fresh - trained)
    assert not any("lora" not in n and "modules_to_save" not in n for n in names)

    train = load_captions_files(train_file=str(synth / "train.jsonl"))["train"]
    from transformers import Seq2SeqTrainer

    Seq2SeqTrainer(
        model=peft_model, args=_args(tmp_path / "t", max_steps=3, remove_unused_columns=False, learning_rate=1e-2),
        train_dataset=train, data_collator=VideoCaptionCollator(processor),
    ).train()
    peft_model.eval()
    pixels = VideoCaptionCollator(processor)(list(train.select(range(2))))["pixel_values_videos"]
    expected = peft_model.generate(pixel_values_videos=pixels, max_new_tokens=6)

    peft_model.save_pretrained(tmp_path / "adapter")
    model.base_model if hasattr(model, "base_model") else None
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    base, _ = _tiny_model_and_processor(synth, config_file)  # same seed -> same base weights
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    assert torch.equal(reloaded.generate(pixel_values_videos=pixels, max_new_tokens=6), expected)
    merged = reloaded.merge_and_unload()
    assert isinstance(merged, VidGPT2ForConditionalGeneration)
    assert torch.equal(merged.generate(pixel_values_videos=pixels, max_new_tokens=6), expected)


def test_lora_run_saves_adapter_and_merged_model(synth, backbones, tmp_path):
    """A LoRA run from pretrained backbones: the adapter folder holds the trained fresh layers, the merged model keeps
    them, and the pretrained parts that only get adapters are unchanged apart from the merged low-rank update."""
    from peft import PeftModel

    out = tmp_path / "lora"
    run_training(
        _backbone_args(backbones),
        _data(synth, test_file=None, use_java=False),
        LoraArguments(lora=True, merge_lora=True),
        _args(out, max_steps=2),
    )
    assert (out / "adapter_model.safetensors").exists()
    merged = AutoModel.from_pretrained(out / "merged")
    assert isinstance(merged, VidGPT2ForConditionalGeneration)
    assert not any("lora" in k for k in merged.state_dict())
    set_seed(0)  # run_training seeds before building: the same random start for the fresh weights
    start = VidGPT2ForConditionalGeneration.from_backbones(*backbones, num_frames=4, image_size=32)
    merged_state, start_state = merged.state_dict(), start.state_dict()
    for name in start.fresh_parameter_names:
        assert not torch.equal(merged_state[name], start_state[name]), f"fresh {name} did not train"
    for name, tensor in start_state.items():
        if "vision_tower" in name or name.startswith("decoder.transformer.wte"):
            assert torch.equal(merged_state[name], tensor), f"pretrained {name} changed"
    reloaded = PeftModel.from_pretrained(start, out).merge_and_unload()
    for name, tensor in merged_state.items():
        assert torch.allclose(reloaded.state_dict()[name], tensor, atol=1e-6), name


def test_model_source_errors(synth, config_file):
    with pytest.raises(ValueError, match="exactly one model source"):
        build_model_and_processor(ModelArguments(config=str(config_file), model="x"))
    with pytest.raises(ValueError, match="--tokenizer ID_OR_DIR or --build-tokenizer"):
        build_model_and_processor(ModelArguments(config=str(config_file)))
    with pytest.raises(ValueError, match="No data"):
        run_training(ModelArguments(config=str(config_file)), DataArguments(), LoraArguments(), _args(Path("/tmp/x")))


# --- evaluate + CLI ---------------------------------------------------------------------------------------------------
def test_evaluate_cli_writes_predictions_and_metrics(synth, config_file, tmp_path, capsys):
    model, processor = _tiny_model_and_processor(synth, config_file)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    code = cli_main(
        [
            "evaluate", "--model", str(tmp_path / "model"), "--test-file", str(synth / "test.jsonl"),
            "--output", str(tmp_path / "m.json"), "--predictions", str(tmp_path / "p.jsonl"), "--max-new-tokens", "5",
        ]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) >= {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider", "meteor"}
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"video", "prediction", "references"} <= set(rows[0])
    assert "cider" in capsys.readouterr().out
    test = load_captions_files(test_file=str(synth / "test.jsonl"))["test"]
    _, direct = evaluate_dataset(model, processor, test, max_new_tokens=5)
    assert direct["cider"] == pytest.approx(metrics["cider"])


def test_evaluate_with_a_clip_failing_at_decode_time(synth, config_file, tmp_path, capsys):
    """Review finding: --on-bad-video skip still exited 1 with "no metrics" when a clip passed the check (here: no
    check) and failed to decode; and the default wrote no predictions of the good clips."""
    model, processor = _tiny_model_and_processor(synth, config_file)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    test_file = tmp_path / "test.jsonl"
    rows = [json.loads(line) for line in (synth / "test.jsonl").read_text().splitlines()]
    for row in rows:
        row["video"] = str(synth / row["video"])  # relative to the test file's folder
    rows.insert(1, {"video": str(broken), "caption": "a red square"})
    test_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = ["evaluate", "--model", str(tmp_path / "model"), "--test-file", str(test_file), "--max-new-tokens", "5",
            "--no-check-data", "--num-workers", "0", "--no-java"]

    def predictions(path: Path) -> list[dict]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    assert cli_main([*base, "--predictions", str(tmp_path / "p1.jsonl"), "--output", str(tmp_path / "m1.json")]) == 1
    err = capsys.readouterr().err
    assert f"FAILED {broken}" in err and "1 of 7 test clips could not be captioned: no metrics" in err
    assert "--on-bad-video skip" in err and not (tmp_path / "m1.json").exists()
    good = predictions(tmp_path / "p1.jsonl")
    assert len(good) == 6 and str(broken) not in {r["video"] for r in good}

    code = cli_main([*base, "--on-bad-video", "skip", "--predictions", str(tmp_path / "p2.jsonl"),
                     "--output", str(tmp_path / "m2.json")])
    assert code == 0
    assert "warning: 1 of 7 test clips could not be captioned (--on-bad-video skip): metrics over the other 6" in (
        capsys.readouterr().err
    )
    assert predictions(tmp_path / "p2.jsonl") == good
    metrics = json.loads((tmp_path / "m2.json").read_text())
    test = load_captions_files(test_file=str(synth / "test.jsonl"))["test"]  # the 6 good clips
    _, direct = evaluate_dataset(model, processor, test, max_new_tokens=5, use_java=False)
    assert metrics["cider"] == pytest.approx(direct["cider"])


def test_synth_cli(tmp_path):
    assert cli_main(["synth", str(tmp_path), "--num-train", "4", "--num-validation", "2", "--num-test", "2", "--num-frames", "4", "--size", "32"]) == 0
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 4


def test_train_cli_passes_trainer_flags(synth, config_file, tmp_path):
    out = tmp_path / "cli"
    code = cli_main(
        [
            "train", "--config", str(config_file), "--build-tokenizer",
            "--train-file", str(synth / "train.jsonl"), "--output-dir", str(out),
            "--max-steps", "2", "--per-device-train-batch-size", "4", "--gradient-accumulation-steps", "2",
            "--report-to", "none", "--save-strategy", "no", "--use-cpu", "--bf16",
        ]
    )
    assert code == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert VidGPT2VideoProcessor.from_pretrained(out).num_frames == 4


def test_torchrun_two_processes(synth, config_file, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
        "-m", "vidgpt2.cli", "train", "--config", str(config_file), "--build-tokenizer",
        "--train-file", str(synth / "train.jsonl"), "--validation-file", str(synth / "validation.jsonl"),
        "--output-dir", str(out), "--max-steps", "3", "--per-device-train-batch-size", "4",
        "--per-device-eval-batch-size", "4", "--report-to", "none", "--save-strategy", "steps", "--save-steps", "3",
        "--use-cpu", "--ddp-backend", "gloo", "--seed", "0",
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.safetensors").exists()
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-3"]  # written once, not once per rank
    assert (out / "checkpoint-3" / "model.safetensors").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert "eval_cider" in metrics
    # both ranks finish and report the same evaluation (predictions gathered across processes)
    per_rank = {}
    for line in result.stderr.splitlines():
        if "final metrics (process " in line:
            rank = int(line.split("final metrics (process ")[1].split(")")[0])
            per_rank[rank] = json.loads(line.split("): ", 1)[1])
    assert set(per_rank) == {0, 1}
    keys = [k for k in per_rank[0] if k.startswith("eval_") and not k.endswith(("runtime", "per_second"))]
    assert keys and all(per_rank[0][k] == per_rank[1][k] for k in keys), per_rank
    assert per_rank[0]["eval_cider"] == metrics["eval_cider"]


def test_train_push_to_hub_pushes_the_complete_set(synth, config_file, tmp_path, monkeypatch):
    import vidgpt2.hub
    from tests.fake_hub import FakeHfApi

    api = FakeHfApi(tmp_path / "hub")
    monkeypatch.setattr(vidgpt2.hub, "_default_api", lambda token=None: api)
    out = tmp_path / "pushed"
    run_training(
        ModelArguments(config=str(config_file), build_tokenizer=True),
        _data(synth, use_java=False),
        LoraArguments(),
        _args(out, max_steps=2, push_to_hub=True, hub_model_id="user/synth-captioner"),
    )
    repo = api.repo_path("user/synth-captioner")
    for name in ("model.safetensors", "config.json", "generation_config.json", "processor_config.json",
                 "tokenizer.json", "modeling_vidgpt2.py", "pipeline_vidgpt2.py", "README.md", "metrics.json"):
        assert (repo / name).is_file(), name
    card = (repo / "README.md").read_text()
    assert "model-index" in card and "cider" in card.lower()
    assert AutoModel.from_pretrained(repo).config.num_frames == 4


def test_push_with_unmerged_lora_is_refused_before_training(synth, backbones, tmp_path):
    with pytest.raises(ValueError, match="--merge-lora"):
        run_training(
            _backbone_args(backbones),
            _data(synth),
            LoraArguments(lora=True),
            _args(tmp_path, push_to_hub=True, hub_model_id="user/x"),
        )


# --- issue 9, item 7: every generation flag takes effect in evaluation ------------------------------------------------
def _spy_generate(monkeypatch) -> list[tuple[dict, torch.Tensor]]:
    calls: list[tuple[dict, torch.Tensor]] = []
    original = VidGPT2ForConditionalGeneration.generate

    def spy(self, *args, **kwargs):
        ids = original(self, *args, **kwargs)
        calls.append((kwargs, ids))
        return ids

    monkeypatch.setattr(VidGPT2ForConditionalGeneration, "generate", spy)
    return calls


def test_generation_max_length_and_num_beams_take_effect_in_evaluation(synth, tmp_path, caplog, monkeypatch):
    """`--generation-max-length 3` caps evaluation captions at 2 tokens (it counts the start token) instead of being
    overridden by the caption limit, without "Both `max_new_tokens` and `max_length`"; `--generation-num-beams`
    reaches generate."""
    calls = _spy_generate(monkeypatch)
    hf_logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            metrics = run_training(
                ModelArguments(config={**TINY_CONFIG, "freeze_vision": False}, build_tokenizer=True),
                _data(synth, test_file=None, max_caption_length=16, use_java=False),
                LoraArguments(),
                _args(tmp_path / "gen", max_steps=2, generation_max_length=3, generation_num_beams=2),
            )
    finally:
        hf_logging.disable_propagation()
    assert "eval_cider" in metrics and calls
    for kwargs, ids in calls:
        assert ids.shape[-1] <= 3, ids.shape  # decoder start + at most 2 tokens
        assert kwargs.get("max_new_tokens") == 2 and kwargs.get("num_beams") == 2 and "max_length" not in kwargs
    assert "Both `max_new_tokens`" not in caplog.text
    # the saved model keeps its own caption limit: the flags are for evaluation only
    assert GenerationConfig.from_pretrained(tmp_path / "gen").max_new_tokens == 16


def test_caption_trainer_generation_config_and_bad_lengths(synth, config_file, tmp_path, monkeypatch):
    """`--generation-config` replaces the model's generation config, and the special ids it lacks come from the
    model; contradictory or too small lengths are refused with the flag to fix."""
    from vidgpt2.training import CaptionTrainer

    model, processor = _tiny_model_and_processor(synth, config_file)
    validation = load_captions_files(validation_file=str(synth / "validation.jsonl"))["validation"]
    calls = _spy_generate(monkeypatch)
    args = _args(tmp_path, predict_with_generate=True, remove_unused_columns=False,
                 generation_config=GenerationConfig(max_new_tokens=2, num_beams=2))
    trainer = CaptionTrainer(model=model, args=args, eval_dataset=validation,
                             data_collator=VideoCaptionCollator(processor), processing_class=processor,
                             compute_metrics=lambda prediction: {})
    assert model.generation_config.decoder_start_token_id == model.config.decoder_start_token_id
    assert model.generation_config.eos_token_id == model.config.eos_token_id
    trainer.evaluate()
    assert calls and all(ids.shape[-1] <= 3 for _, ids in calls)
    with pytest.raises(ValueError, match="max_length or max_new_tokens"):
        trainer.evaluate(max_length=3, max_new_tokens=2)
    trainer.args.generation_max_length = 1
    with pytest.raises(ValueError, match="--generation-max-length 1"):
        trainer.evaluate()


# --- issue 9, item 8: load_best_model_at_end chooses by CIDEr -----------------------------------------------------------
def test_load_best_model_at_end_chooses_the_checkpoint_by_cider(synth, tmp_path):
    out = tmp_path / "best"
    run_training(
        ModelArguments(config={**TINY_CONFIG, "freeze_vision": False}, build_tokenizer=True),
        _data(synth, test_file=None, max_caption_length=12, use_java=False),
        LoraArguments(),
        _args(out, max_steps=-1, num_train_epochs=2, eval_strategy="epoch", save_strategy="epoch",
              load_best_model_at_end=True, learning_rate=1e-2),
    )
    state = json.loads((out / "trainer_state.json").read_text())
    evals = [h for h in state["log_history"] if "eval_cider" in h and "eval_loss" in h][:2]
    assert [h["epoch"] for h in evals] == [1.0, 2.0]
    best = max(evals, key=lambda h: h["eval_cider"])  # the first of equal scores, as the Trainer keeps it
    assert state["best_metric"] == pytest.approx(best["eval_cider"])
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best['step']}")


def test_metric_for_best_model_explicit_choice_is_kept(tmp_path):
    from vidgpt2.training import _configure_args, parse_train_arguments

    common = ["--output-dir", str(tmp_path), "--config", "c.json", "--eval-strategy", "epoch",
              "--save-strategy", "epoch", "--load-best-model-at-end", "--report-to", "none"]
    for argv, expected in (
        (common, ("cider", True)),
        (common + ["--metric-for-best-model", "loss"], ("eval_loss", False)),
        (common + ["--metric_for_best_model=bleu_4"], ("bleu_4", True)),
        (common + ["--lr-scheduler-type", "reduce_lr_on_plateau"], ("loss", False)),
    ):
        training_args = parse_train_arguments(argv)[3]
        _configure_args(training_args, has_eval=True)
        assert (training_args.metric_for_best_model, training_args.greater_is_better) == expected, argv
    json_file = tmp_path / "args.json"
    json_file.write_text(json.dumps({"output_dir": str(tmp_path), "config": "c.json", "eval_strategy": "epoch",
                                     "save_strategy": "epoch", "load_best_model_at_end": True,
                                     "metric_for_best_model": "loss"}))
    assert parse_train_arguments([str(json_file)])[3].metric_for_best_model == "eval_loss"


# --- issue 9, item 9: the vision tower trains unless its weights are pretrained -----------------------------------------
def _tower_trains(model) -> bool:
    return all(p.requires_grad for p in model.encoder.vision_tower.parameters())


def test_vision_tower_default_follows_where_its_weights_came_from(synth, backbones, tmp_path, caplog):
    captions = load_captions_files(train_file=str(synth / "train.jsonl"))["train"]["caption"]
    scratch = {k: v for k, v in TINY_CONFIG.items() if k != "freeze_vision"}
    with caplog.at_level(logging.INFO, logger="vidgpt2.training"):
        model, processor = build_model_and_processor(ModelArguments(config=scratch, build_tokenizer=True), captions)
    assert _tower_trains(model) and model.config.freeze_vision is False
    assert "vision tower: trains (random initialisation (--config))" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vidgpt2.training"):
        frozen, _ = build_model_and_processor(ModelArguments(config=TINY_CONFIG, build_tokenizer=True), captions)
    assert not _tower_trains(frozen) and "learns from fixed random features" in caplog.text  # the config asked: warned

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="vidgpt2.training"):
        pretrained, _ = build_model_and_processor(_backbone_args(backbones))
    assert not _tower_trains(pretrained) and pretrained.config.freeze_vision is True
    assert f"vision tower: frozen (pretrained weights from {backbones[0]})" in caplog.text
    unfrozen, _ = build_model_and_processor(_backbone_args(backbones, freeze_vision=False))
    assert _tower_trains(unfrozen) and unfrozen.config.freeze_vision is False

    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    assert _tower_trains(build_model_and_processor(ModelArguments(model=str(tmp_path / "ckpt")))[0])
    refrozen, _ = build_model_and_processor(ModelArguments(model=str(tmp_path / "ckpt"), freeze_vision=True))
    assert not _tower_trains(refrozen) and refrozen.config.freeze_vision is True


# --- issue 9, item 10: LoRA trains the fresh cross-attention fully --------------------------------------------------------
def test_lora_on_backbones_trains_fresh_cross_attention_fully(synth, backbones):
    model, processor = build_model_and_processor(_backbone_args(backbones), max_caption_length=12)
    fresh = set(model.fresh_parameter_names)
    assert {f"decoder.transformer.h.{i}.{m}.weight" for i in range(2)
            for m in ("crossattention.c_attn", "crossattention.q_attn", "crossattention.c_proj", "ln_cross_attn")} <= fresh
    peft_model = apply_lora(model, LoraArguments(lora=True, lora_rank=4, lora_alpha=8, lora_dropout=0.0))
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    rows = list(load_captions_files(train_file=str(synth / "train.jsonl"))["train"].select(range(4)))
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # LoRA B starts at zero: A gets its first gradient on the second step
        optimizer.zero_grad()
        peft_model(**VideoCaptionCollator(processor)(rows)).loss.backward()
        optimizer.step()

    def plain(name: str) -> str:  # PEFT name of a trained copy -> the model's parameter name
        return name.removeprefix("base_model.model.").replace("modules_to_save.default.", "")

    trained = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert fresh <= {plain(n) for n in trained}, sorted(fresh - {plain(n) for n in trained})
    for name, param in peft_model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        if param.requires_grad:
            assert param.grad is not None and changed, f"{name} did not train"
        else:
            assert not changed, f"frozen {name} changed"
    assert any(".attn.c_attn.lora_A" in n for n in trained)  # pretrained self-attention: adapters
    assert not any("crossattention" in n and "lora" in n for n in trained)  # fresh: trained fully, no adapter

    state = {plain(n): p.detach() for n, p in peft_model.named_parameters() if "modules_to_save" in n}
    merged = peft_model.merge_and_unload().state_dict()
    for name in fresh:
        assert torch.equal(merged[name], state[name]), name


def test_lora_target_and_source_errors(synth, backbones, config_file, tmp_path):
    model, _ = build_model_and_processor(_backbone_args(backbones))
    with pytest.raises(ValueError, match="--lora-target-modules .*train fully"):
        apply_lora(model, LoraArguments(lora=True, lora_target_modules=r".*crossattention\.(q_attn|c_attn)$"))
    with pytest.raises(ValueError, match="matches no module"):
        apply_lora(model, LoraArguments(lora=True, lora_target_modules="nothing"))
    with pytest.raises(ValueError, match="with --config every weight starts random"):
        run_training(ModelArguments(config=str(config_file), build_tokenizer=True), _data(synth),
                     LoraArguments(lora=True), _args(tmp_path))


def test_merge_lora_without_lora_is_refused_before_any_data_work(tmp_path, capsys):
    """Review finding: --merge-lora without --lora silently ran a full fine-tune."""
    missing = tmp_path / "no_such_train.jsonl"  # not read: the flags are checked first
    with pytest.raises(ValueError, match="--merge-lora .*--lora is not set"):
        run_training(ModelArguments(model="unused"), DataArguments(train_file=str(missing)),
                     LoraArguments(merge_lora=True), _args(tmp_path))
    code = cli_main(["train", "--model", "unused", "--train-file", str(missing), "--output-dir", str(tmp_path / "o"),
                     "--merge-lora"])
    assert code == 1 and "add --lora" in capsys.readouterr().err


# --- issue 9, item 11: the card of a `vidgpt2 train` folder shows its hyperparameters -----------------------------------
def test_push_of_a_train_output_folder_shows_its_hyperparameters(synth, config_file, tmp_path, monkeypatch):
    import vidgpt2.hub
    from tests.fake_hub import FakeHfApi

    api = FakeHfApi(tmp_path / "hub")
    monkeypatch.setattr(vidgpt2.hub, "_default_api", lambda token=None: api)
    out = tmp_path / "run"
    run_training(
        ModelArguments(config=str(config_file), build_tokenizer=True),
        _data(synth, validation_file=None, test_file=None),
        LoraArguments(),
        _args(out, max_steps=1, hub_token="secret-token"),
    )
    assert (out / "training_args.bin").is_file()
    saved = json.loads((out / "training_args.json").read_text())
    assert saved["learning_rate"] == 3e-3 and "secret-token" not in json.dumps(saved)
    assert cli_main(["push", "--model", str(out), "--repo-id", "user/run"]) == 0
    card = (api.repo_path("user/run") / "README.md").read_text()
    assert "| learning_rate | 0.003 |" in card and "| per_device_train_batch_size | 8 |" in card
    assert "| max_steps | 1 |" in card and "| seed | 0 |" in card
    assert "pip install vidgpt2" not in card and "pypi.org" not in card
