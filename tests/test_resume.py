"""Interrupted work resumes to the uninterrupted result: `vidgpt2 train` and `vidgpt2 extract-features` killed with
SIGKILL (kill -9) and run again.

The killed runs are the real CLI in a subprocess that sends itself SIGKILL at a chosen point (inside the writing of a
checkpoint, or between writing a feature file and renaming it): the same signal as an outside `kill -9`, at a point
that does not depend on timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vidgpt2
from tests.tiny import TINY_VISION, tiny_config, tiny_model, tiny_tokenizer
from vidgpt2 import VidGPT2ForConditionalGeneration, VidGPT2Processor
from vidgpt2.data import load_captions_files, write_synthetic_dataset
from vidgpt2.data.feature_cache import FeatureCache, extract_features, iter_samples

# Dropout on in both the visual tokens and GPT-2: a resume that lost the RNG state would train differently.
CONFIG = {
    "vision_config": TINY_VISION,
    "text_config": {"n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64, "resid_pdrop": 0.1},
    "num_frames": 4,
    "image_size": 32,
    "visual_dropout": 0.1,
}

# Runs `vidgpt2` (argv[3:]) and SIGKILLs itself at a chosen point (argv[1], argv[2]).
CHILD = r"""
import os, signal, sys

import transformers

from vidgpt2.cli import main

kind, at = sys.argv[1], int(sys.argv[2])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "checkpoint":
    # inside the writing of checkpoint-<at>: weights, optimizer and scheduler written; RNG states and
    # trainer_state.json not yet
    save_rng_state = transformers.Trainer._save_rng_state

    def patched(self, output_dir):
        if self.state.global_step == at:
            die()
        save_rng_state(self, output_dir)

    transformers.Trainer._save_rng_state = patched
elif kind == "extract":
    # the <at>-th feature file is written under its temporary name and not yet renamed
    replace, written = os.replace, []

    def patched(src, dst):
        if str(dst).endswith(".safetensors"):
            written.append(dst)
            if len(written) == at:
                die()
        replace(src, dst)

    os.replace = patched
sys.exit(main(sys.argv[3:]))
"""


def _env() -> dict[str, str]:
    """The children import this checkout's vidgpt2 and use one thread each (the same numerics in every run)."""
    src = str(Path(vidgpt2.__file__).resolve().parents[1])
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join([src, root, os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


def _start(argv: list[str], kill: tuple[str, int] | None = None) -> subprocess.Popen:
    """`vidgpt2 ARGV` in a subprocess; with `kill=(kind, at)` it SIGKILLs itself at that point (see CHILD)."""
    prefix = ["-c", CHILD, kill[0], str(kill[1])] if kill else ["-m", "vidgpt2.cli"]
    return subprocess.Popen(
        [sys.executable, *prefix, *argv], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _vidgpt2(argv: list[str], kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    return _finish(_start(argv, kill))


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, num_train=12, num_validation=4, num_test=0, num_frames=4, size=32, seed=0, progress=False)
    return root


def _train_argv(synth: Path, config_file: Path, out: Path) -> list[str]:
    # 12 clips / 4 per batch = 3 steps per epoch: 6 steps cross an epoch boundary (a new shuffle) after the resume
    return [
        "train", "--config", str(config_file), "--build-tokenizer",
        "--train-file", str(synth / "train.jsonl"), "--validation-file", str(synth / "validation.jsonl"),
        "--output-dir", str(out), "--max-steps", "6", "--per-device-train-batch-size", "4",
        "--per-device-eval-batch-size", "4", "--learning-rate", "3e-3", "--max-caption-length", "16",
        "--save-strategy", "steps", "--save-steps", "2", "--eval-strategy", "steps", "--eval-steps", "2",
        "--logging-steps", "3", "--seed", "0", "--use-cpu", "--report-to", "none", "--disable-tqdm", "True",
        "--use-java", "False",
    ]  # fmt: skip


def _timing(key: str) -> bool:
    return key.endswith(("_runtime", "_per_second"))


def test_training_killed_while_checkpointing_resumes_to_the_uninterrupted_result(synth, tmp_path):
    """kill -9 while checkpoint-4 is being written, then `--resume-from-checkpoint True`: the resume starts from
    checkpoint-2 (the last finished one, not the half-written checkpoint-4) and ends with exactly the weights, the
    evaluation metrics, the loss log and (within 1e-6 relative) the train_loss of an uninterrupted run."""
    config_file = tmp_path / "tiny.json"
    config_file.write_text(json.dumps(CONFIG))
    whole, cut = tmp_path / "uninterrupted", tmp_path / "interrupted"

    # the uninterrupted and the interrupted run are independent: side by side where a second core is free
    uninterrupted = _start(_train_argv(synth, config_file, whole))
    killed = _vidgpt2(_train_argv(synth, config_file, cut), kill=("checkpoint", 4))
    done = _finish(uninterrupted)
    assert done.returncode == 0, done.stderr[-3000:]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (cut / "checkpoint-2" / "trainer_state.json").is_file()
    assert (cut / "checkpoint-4" / "model.safetensors").is_file()  # half-written: the newest checkpoint folder
    assert not (cut / "checkpoint-4" / "trainer_state.json").exists()
    assert not (cut / "model.safetensors").exists()

    resumed = _vidgpt2([*_train_argv(synth, config_file, cut), "--resume-from-checkpoint", "True"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Not resuming from checkpoint-4" in resumed.stderr
    assert f"Resuming from the last finished checkpoint, {cut / 'checkpoint-2'}" in resumed.stderr

    expected, got = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"weights differ from the uninterrupted run: {different}"

    metrics_whole = json.loads((whole / "metrics.json").read_text())
    metrics_cut = json.loads((cut / "metrics.json").read_text())
    assert metrics_whole.keys() == metrics_cut.keys()
    assert metrics_cut["train_loss"] == pytest.approx(metrics_whole["train_loss"], rel=1e-6)
    exact = [k for k in metrics_whole if not _timing(k) and k != "train_loss"]
    assert "eval_loss" in exact and "eval_cider" in exact
    assert {k: metrics_cut[k] for k in exact} == {k: metrics_whole[k] for k in exact}

    def log(folder: Path) -> list[dict]:
        history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
        return [{k: v for k, v in entry.items() if not _timing(k) and k != "train_loss"} for entry in history]

    assert log(cut) == log(whole)  # per-step losses, grad norms, learning rates, evaluations, in order
    summary = [e for e in json.loads((cut / "trainer_state.json").read_text())["log_history"] if "train_loss" in e]
    assert summary[-1]["train_loss"] == metrics_cut["train_loss"]


def test_resume_from_checkpoint_values(tmp_path):
    from vidgpt2.training import resolve_resume_checkpoint

    out = tmp_path / "run"
    out.mkdir()
    assert resolve_resume_checkpoint(None, out) is None
    assert resolve_resume_checkpoint("False", out) is None
    with pytest.raises(ValueError, match="no finished checkpoint-N folder in .*run"):
        resolve_resume_checkpoint("True", out)
    for step in (2, 10):  # 10 > 2 numerically, though not as text
        (out / f"checkpoint-{step}").mkdir()
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (out / "checkpoint-12").mkdir()  # stopped before trainer_state.json
    (out / "checkpoint-14").mkdir()
    (out / "checkpoint-14" / "trainer_state.json").write_text('{"global_st')  # stopped while writing it
    assert resolve_resume_checkpoint("True", out) == str(out / "checkpoint-10")
    assert resolve_resume_checkpoint(True, out) == str(out / "checkpoint-10")
    assert resolve_resume_checkpoint(str(out / "checkpoint-2"), out) == str(out / "checkpoint-2")
    with pytest.raises(ValueError, match=r"checkpoint-12 has no trainer_state.json.*newest finished one .*checkpoint-10"):
        resolve_resume_checkpoint(str(out / "checkpoint-12"), out)
    with pytest.raises(ValueError, match="checkpoint-14.*not readable JSON"):
        resolve_resume_checkpoint(str(out / "checkpoint-14"), out)
    with pytest.raises(ValueError, match="nowhere is not a folder"):
        resolve_resume_checkpoint(str(tmp_path / "nowhere"), out)


def test_whole_run_train_loss_weights_each_logged_window_by_its_steps():
    from vidgpt2.training import whole_run_train_loss

    # steps 1-3 mean 3.0, step 4 mean 2.0 (logged at the checkpoint), then the resumed call: steps 5-6 mean 1.0
    history = [{"loss": 3.0, "step": 3}, {"eval_loss": 9.0, "step": 3}, {"loss": 2.0, "step": 4}, {"loss": 1.0, "step": 6}]
    assert whole_run_train_loss(history, 4, 6, 1.0) == pytest.approx((9 + 2 + 2) / 6)
    assert whole_run_train_loss(history, 5, 6, 1.0) is None  # nothing logged at step 5: unknown


# --- feature extraction ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    model = tiny_model()
    model.save_pretrained(folder)
    VidGPT2Processor.from_config(tiny_config(), tiny_tokenizer()).save_pretrained(folder)
    return folder


def _extract_argv(synth: Path, model_dir: Path, out: Path) -> list[str]:
    return [
        "extract-features", "--model", str(model_dir), "--data-file", str(synth / "train.jsonl"),
        "--data-file", str(synth / "validation.jsonl"), "--output", str(out), "--batch-size", "3",
    ]  # fmt: skip


def _samples(synth: Path) -> list[dict]:
    splits = [load_captions_files(train_file=str(synth / f"{s}.jsonl"))["train"] for s in ("train", "validation")]
    return [s for split in splits for s in iter_samples(split)]


def test_extraction_killed_mid_write_resumes_without_redoing_finished_clips(synth, model_dir, tmp_path):
    """kill -9 between writing the 5th feature file and renaming it; the rerun keeps the 4 finished files untouched
    (same inode and mtime), extracts only the 12 others, leaves no partial file, and the cache equals one
    extracted without interruption."""
    out = tmp_path / "cache"
    killed = _vidgpt2(_extract_argv(synth, model_dir, out), kill=("extract", 5))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finished = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "features").glob("*.safetensors")}
    assert len(finished) == 4
    assert len([p for p in (out / "features").iterdir() if p not in finished]) == 1  # the one cut off

    rerun = _vidgpt2(_extract_argv(synth, model_dir, out))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Extracting features for 12 clips (4 already cached)" in rerun.stderr
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in finished} == finished
    files = sorted((out / "features").iterdir())
    assert all(p.suffix == ".safetensors" for p in files), files  # the partial file is gone
    assert len(files) == 16

    model = VidGPT2ForConditionalGeneration.from_pretrained(model_dir)
    reference = extract_features(
        model, VidGPT2Processor.from_pretrained(model_dir), _samples(synth), tmp_path / "reference", show_progress=False
    )
    cache = FeatureCache(out)
    cache.check_compatible(model)
    cache.check_covers(_samples(synth))
    for sample in _samples(synth):
        torch.testing.assert_close(cache.read(sample["video"]), reference.read(sample["video"]), rtol=0, atol=1e-6)


def test_damaged_cache_entry_is_detected_and_extracted_again(synth, model_dir, tmp_path, caplog):
    model = VidGPT2ForConditionalGeneration.from_pretrained(model_dir)
    processor = VidGPT2Processor.from_pretrained(model_dir)
    samples = _samples(synth)[:4]
    cache = extract_features(model, processor, samples, tmp_path / "cache", show_progress=False)
    damaged, intact = cache.path_for(samples[0]["video"]), cache.path_for(samples[1]["video"])
    original = cache.read(samples[0]["video"]).clone()  # safetensors maps the file: truncating it in place would show
    damaged.write_bytes(damaged.read_bytes()[:-100])  # truncated, as by a copy or sync cut short

    with pytest.raises(ValueError, match=f"{damaged.name}.*damaged.*vidgpt2 extract-features"):
        cache.read(samples[0]["video"])
    with pytest.raises(ValueError, match=r"lacks 1 of the 4 train clips .*Run `vidgpt2 extract-features"):
        cache.check_covers(samples, "train")

    intact_stamp = intact.stat().st_mtime_ns
    with caplog.at_level("WARNING", logger="vidgpt2.data.feature_cache"):
        extract_features(model, processor, samples, tmp_path / "cache", show_progress=False)
    assert damaged.name in caplog.text and "extracted again" in caplog.text
    assert torch.equal(cache.read(samples[0]["video"]), original)
    assert intact.stat().st_mtime_ns == intact_stamp
    assert cache.missing(samples) == []


def test_training_on_an_incomplete_feature_cache_stops_before_the_first_step(synth, model_dir, tmp_path):
    """A cache whose extraction was interrupted is refused up front, not at the first missing clip mid-epoch."""
    from transformers import Seq2SeqTrainingArguments

    from vidgpt2.training import DataArguments, LoraArguments, ModelArguments, run_training

    model = VidGPT2ForConditionalGeneration.from_pretrained(model_dir)
    processor = VidGPT2Processor.from_pretrained(model_dir)
    extract_features(model, processor, _samples(synth)[:4], tmp_path / "cache", show_progress=False)
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, use_cpu=True, report_to=[])
    data = DataArguments(train_file=str(synth / "train.jsonl"), feature_cache=str(tmp_path / "cache"))
    # the data check at the start lists them all; without it, the cache's own coverage check still stops the run
    with pytest.raises(ValueError, match=r"8 of 12 clips .*\n.*no cached features .*extract-features"):
        run_training(ModelArguments(model=str(model_dir)), data, LoraArguments(), args)
    data.check_data = False
    with pytest.raises(ValueError, match=r"lacks 8 of the 12 train clips .*extract-features --output"):
        run_training(ModelArguments(model=str(model_dir)), data, LoraArguments(), args)
    assert not (tmp_path / "run" / "model.safetensors").exists()
