"""Publishing: what `push_to_hub` writes, that it never clobbers a README or uploads half a folder, and that the
pushed repository loads with `trust_remote_code=True` where vidgpt2 is not installed. Offline (FakeHfApi)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, metadata_load
from safetensors.torch import load_file

import vidgpt2
from tests.fake_hub import FakeHfApi
from tests.tiny import tiny_config, tiny_model, tiny_tokenizer
from vidgpt2 import VidGPT2Processor
from vidgpt2.hub import PushToHubError, push_to_hub, read_metrics, render_model_card

REPO = "user/vidgpt2-tiny"
METRICS = {
    "test_bleu_1": 0.61,
    "test_bleu_2": 0.45,
    "test_bleu_3": 0.33,
    "test_bleu_4": 0.25,
    "test_meteor": 0.22,
    "test_rouge_l": 0.5,
    "test_cider": 0.8,
    "test_loss": 2.0,  # not a caption metric: ignored
}
REMOTE_CODE = {
    "configuration_vidgpt2.py",
    "modeling_vidgpt2.py",
    "processing_vidgpt2.py",
    "video_processing_vidgpt2.py",
    "video_io.py",
}
HAS_PIPELINE = (vidgpt2.hub.PACKAGE_DIR / "pipeline_vidgpt2.py").is_file()


@pytest.fixture
def processor():
    if vidgpt2.VidGPT2VideoProcessor is None:
        pytest.skip("video_processing_vidgpt2 is not importable yet")
    video_processor = vidgpt2.VidGPT2VideoProcessor(
        num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    return VidGPT2Processor(video_processor=video_processor, tokenizer=tiny_tokenizer())


@pytest.fixture
def api(tmp_path):
    return FakeHfApi(tmp_path / "hub")


def read_json(path):
    return json.loads(path.read_text())


def test_push_model_writes_weights_config_processor_code_and_card(api, processor):
    model = tiny_model()
    url = push_to_hub(model, REPO, processor=processor, api=api, metrics=METRICS, datasets=["msvd"], private=True)

    assert url.startswith(f"https://huggingface.co/{REPO}/commit/")
    assert len(api.commits) == 1 and api.repos[("model", REPO)]["private"] is True
    files = set(api.list_repo_files(REPO))
    expected = {"model.safetensors", "config.json", "generation_config.json", "processor_config.json", "README.md"}
    expected |= REMOTE_CODE | ({"pipeline_vidgpt2.py"} if HAS_PIPELINE else set())
    assert expected <= files
    assert any(name.startswith("tokenizer") for name in files)

    repo = api.repo_path(REPO)
    auto_map = read_json(repo / "config.json")["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_vidgpt2.VidGPT2Config"
    assert (
        auto_map["AutoModel"] == auto_map["AutoModelForSeq2SeqLM"] == "modeling_vidgpt2.VidGPT2ForConditionalGeneration"
    )
    assert (
        read_json(repo / "processor_config.json")["auto_map"]["AutoProcessor"] == "processing_vidgpt2.VidGPT2Processor"
    )
    weights, state = load_file(repo / "model.safetensors"), model.state_dict()
    assert len(weights) > 100 and all(torch.equal(tensor, state[name]) for name, tensor in weights.items())

    metadata = metadata_load(repo / "README.md")
    assert metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "video-text-to-text"
    assert {"vidgpt2", "video-captioning", "custom_code"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["msvd"] and metadata["license"] == "apache-2.0"
    (result,) = metadata["model-index"][0]["results"]
    assert result["dataset"] == {"name": "msvd", "type": "msvd", "split": "test"}
    scores = {m["type"]: m["value"] for m in result["metrics"]}
    assert scores == {k.removeprefix("test_"): v for k, v in METRICS.items() if k != "test_loss"}
    body = (repo / "README.md").read_text()
    assert "trust_remote_code=True" in body and "2504.16788" in body and "0-1 scale" in body
    assert f'AutoModel.from_pretrained("{REPO}"' in body


def test_push_from_training_folder_reads_metrics_and_training_args(api, processor, tmp_path):
    model = tiny_model(seed=1)
    folder = tmp_path / "run"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "all_results.json").write_text(json.dumps({"eval_bleu_4": 0.31, "eval_cider": 0.7, "epoch": 3.0}))
    (folder / "training_args.json").write_text(json.dumps({"learning_rate": 3e-4, "seed": 7, "lora_r": 8}))

    push_to_hub(folder, REPO, api=api)

    repo = api.repo_path(REPO)
    weights, state = load_file(repo / "model.safetensors"), model.state_dict()
    assert len(weights) > 100 and all(torch.equal(tensor, state[name]) for name, tensor in weights.items())
    assert (repo / "all_results.json").is_file() and (repo / "processor_config.json").is_file()
    assert REMOTE_CODE <= set(api.list_repo_files(REPO))
    card = ModelCard.load(repo / "README.md")
    assert {(r.dataset_split, r.metric_type, r.metric_value) for r in card.data.eval_results} == {
        ("validation", "bleu_4", 0.31),
        ("validation", "cider", 0.7),
    }
    assert "| learning_rate | 0.0003 |" in card.text and "| lora_r | 8 |" in card.text


def test_existing_readme_is_kept_unless_overwrite(api, processor):
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=b"# my own card\n", path_in_repo="README.md", repo_id=REPO)
    model = tiny_model()

    push_to_hub(model, REPO, processor=processor, api=api, metrics=METRICS)
    assert (api.repo_path(REPO) / "README.md").read_text() == "# my own card\n"
    assert "README.md" not in api.commits[-1].added and "config.json" in api.commits[-1].added

    push_to_hub(model, REPO, processor=processor, api=api, metrics=METRICS, overwrite_model_card=True)
    assert "model-index" in metadata_load(api.repo_path(REPO) / "README.md")
    assert len(api.commits) == 3


@pytest.mark.parametrize(
    ("target", "step"),
    [("processor", "saving the processor"), ("card", "rendering the model card")],
)
def test_failure_before_upload_pushes_nothing(api, processor, monkeypatch, target, step):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    if target == "processor":
        monkeypatch.setattr(processor, "save_pretrained", boom)
    else:
        monkeypatch.setattr(vidgpt2.hub, "render_model_card", boom)
    with pytest.raises(PushToHubError, match=f"{step} failed.*disk full"):
        push_to_hub(tiny_model(), REPO, processor=processor, api=api)
    assert api.commits == [] and api.repos == {}


def test_push_rejects_wrong_inputs(api, processor, tmp_path):
    with pytest.raises(ValueError, match="processor="):
        push_to_hub(tiny_model(), REPO, api=api)
    with pytest.raises(TypeError, match="VidGPT2ForConditionalGeneration"):
        push_to_hub(torch.nn.Linear(2, 2), REPO, processor=processor, api=api)
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="LoRA adapter"):
        push_to_hub(tmp_path, REPO, api=api)
    assert api.commits == [] and api.repos == {}


def test_bare_repo_name_resolves_to_the_users_namespace(api, processor):
    url = push_to_hub(tiny_model(), "tiny", processor=processor, api=api)
    assert "/user/tiny/commit/" in url and api.file_exists("user/tiny", "model.safetensors")
    assert 'AutoModel.from_pretrained("user/tiny"' in (api.repo_path("user/tiny") / "README.md").read_text()


def test_render_model_card_metadata():
    config = tiny_config()
    config.text_config._name_or_path = "gpt2"  # as from_backbones records it

    plain = ModelCard(render_model_card(config))
    assert plain.data.base_model == ["gpt2"] and plain.data.eval_results is None
    assert "No evaluation results were recorded" in plain.text

    card = ModelCard(
        render_model_card(
            config,
            metrics={"eval_bleu_4": 0.2, "test_action_cider": 0.9, "bleu_1": 0.5, "eval_runtime": 3.0},
            datasets="bdd-x",
            base_model=["microsoft/resnet-50", "gpt2"],
            license="cc-by-nc-4.0",
            repo_id="me/model",
        )
    )
    assert card.data.base_model == ["microsoft/resnet-50", "gpt2"] and card.data.license == "cc-by-nc-4.0"
    rows = {(r.dataset_split, r.metric_type, r.metric_config, r.metric_value) for r in card.data.eval_results}
    assert rows == {("validation", "bleu_4", None, 0.2), ("test", "cider", "action", 0.9), (None, "bleu_1", None, 0.5)}
    assert all(r.dataset_type == "bdd-x" for r in card.data.eval_results)
    assert "CIDEr (action)" in card.text and "82.9K" in card.text  # tiny model parameter count


def test_read_metrics_falls_back_to_best_checkpoint_in_trainer_state(tmp_path):
    state = {
        "best_model_checkpoint": "out/checkpoint-20",
        "log_history": [
            {"step": 10, "loss": 3.0},
            {"step": 10, "eval_bleu_4": 0.1, "eval_loss": 2.0},
            {"step": 20, "eval_bleu_4": 0.3, "eval_cider": 0.5},
            {"step": 30, "eval_bleu_4": 0.2},
        ],
    }
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    assert read_metrics(tmp_path) == {"eval_bleu_4": 0.3, "eval_cider": 0.5}
    (tmp_path / "test_results.json").write_text(json.dumps({"test_bleu_4": 0.25, "test_runtime": 1.0}))
    assert read_metrics(tmp_path) == {"test_bleu_4": 0.25}


def test_pipeline_module_travels_and_is_recorded_in_config(api, processor):
    """The pipeline module (and what it imports) is uploaded and its task written to `custom_pipelines`."""
    push_to_hub(tiny_model(), REPO, processor=processor, api=api)
    repo = api.repo_path(REPO)
    for module in ("pipeline_vidgpt2.py", "explanations.py", "modeling_vidgpt2.py", "video_io.py"):
        assert (repo / module).is_file(), module
    assert read_json(repo / "config.json")["custom_pipelines"] == {
        "video-captioning": {
            "impl": "pipeline_vidgpt2.VideoCaptioningPipeline",
            "pt": ["AutoModelForSeq2SeqLM"],
            "type": "multimodal",
        }
    }
    assert "`pipeline_vidgpt2.py`" in (repo / "README.md").read_text()


LOAD_WITHOUT_VIDGPT2 = textwrap.dedent(
    """
    import sys
    sys.modules["vidgpt2"] = None  # any `import vidgpt2` now fails: only the repository's code can be used
    import torch
    from transformers import AutoModel, AutoProcessor

    repo, expected_file = sys.argv[1], sys.argv[2]
    expected = torch.load(expected_file)
    model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    for obj in (model, model.config, processor, processor.video_processor):
        assert type(obj).__module__.startswith("transformers_modules."), type(obj).__module__
    assert not any(name == "vidgpt2" or name.startswith("vidgpt2.") for name, mod in sys.modules.items() if mod)

    pixels = processor(videos=[expected["video"].numpy()], return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(pixels, expected["pixels"], rtol=0, atol=0)
    with torch.no_grad():
        logits = model(pixel_values_videos=pixels, decoder_input_ids=expected["decoder_input_ids"]).logits
        generated = model.generate(pixel_values_videos=pixels, max_new_tokens=5, do_sample=False, num_beams=1)
    torch.testing.assert_close(logits, expected["logits"], rtol=0, atol=0)
    assert torch.equal(generated, expected["generated"]), (generated, expected["generated"])
    assert processor.batch_decode(generated) == expected["captions"]
    from transformers import pipeline
    captioner = pipeline("video-captioning", model=repo, trust_remote_code=True)
    assert type(captioner).__module__.startswith("transformers_modules."), type(captioner).__module__
    result = captioner(expected["video"].numpy(), max_new_tokens=5, do_sample=False)
    assert result == [{"generated_text": expected["captions"][0]}], result
    print("OK", type(model).__module__)
    """
)


# motion tokens (issue 12): their own layer must come through the remote code too (grid 1x1: the 32 px frames here)
@pytest.mark.parametrize("overrides", [{}, {"visual_tokens": "motion", "grid_size": 1}], ids=["pooled", "motion"])
def test_pushed_repo_loads_with_remote_code_without_vidgpt2(api, processor, tmp_path, overrides):
    model = tiny_model(seed=3, **overrides)
    push_to_hub(model, REPO, processor=processor, api=api)

    video = np.random.default_rng(0).integers(0, 256, size=(6, 40, 48, 3), dtype=np.uint8)
    pixels = processor(videos=[video], return_tensors="pt")["pixel_values_videos"]  # (1, 4, 3, 32, 32)
    decoder_input_ids = torch.tensor([[0, 2, 3, 4]])
    with torch.no_grad():
        logits = model(pixel_values_videos=pixels, decoder_input_ids=decoder_input_ids).logits
        generated = model.generate(pixel_values_videos=pixels, max_new_tokens=5, do_sample=False, num_beams=1)
    expected = dict(
        video=torch.from_numpy(video),
        pixels=pixels,
        decoder_input_ids=decoder_input_ids,
        logits=logits,
        generated=generated,
        captions=processor.batch_decode(generated),
    )
    torch.save(expected, tmp_path / "expected.pt")

    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_VIDGPT2, str(api.repo_path(REPO)), str(tmp_path / "expected.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "OK transformers_modules." in result.stdout


def test_card_claims_no_package_page_and_says_when_hyperparameters_are_missing():
    """vidgpt2 is installed from source: the card must not send users to `pip install vidgpt2` or a PyPI page."""
    card = render_model_card(tiny_config(), repo_id="me/model")
    assert "pip install vidgpt2" not in card and "pypi.org" not in card
    assert "trust_remote_code=True" in card and "installed from its source" in card
    assert "The training hyperparameters were not recorded." in card
    lora = render_model_card(
        tiny_config(), training_args={"learning_rate": 1e-4, "lora": True, "lora_rank": 8, "lora_target_modules": "(a|b)"}
    )
    assert "| lora_rank | 8 |" in lora and "LoRA adapters (merged into these weights)" in lora
    assert "| lora_target_modules | (a\\|b) |" in lora  # a regex's "|" must not split the table row
    assert "were not recorded" not in lora.split("## Evaluation")[0]


def test_training_args_bin_is_not_unpickled(api, processor, tmp_path, caplog):
    """A folder from an older run (or the bare Trainer) has only the pickled training_args.bin: never loaded."""
    folder = tmp_path / "old-run"
    tiny_model().save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "training_args.bin").write_bytes(b"not a pickle that may be loaded")
    with caplog.at_level("INFO", logger="vidgpt2.hub"):
        push_to_hub(folder, REPO, api=api)
    assert "training_args.bin but no training_args.json" in caplog.text
    assert "The training hyperparameters were not recorded." in (api.repo_path(REPO) / "README.md").read_text()
