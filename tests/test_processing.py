"""VidGPT2Processor, Auto-class registration and remote-code portability of the processor + model pair."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoProcessor,
    AutoVideoProcessor,
    ConvNextImageProcessor,
    GPT2TokenizerFast,
    pipeline,
)

from tests.tiny import TINY_CAPTIONS, tiny_model, tiny_tokenizer
from tests.video_fixtures import write_test_clip
from vidgpt2 import VidGPT2Config, VidGPT2Processor, VidGPT2VideoProcessor


@pytest.fixture
def processor() -> VidGPT2Processor:
    video_processor = VidGPT2VideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return VidGPT2Processor(video_processor=video_processor, tokenizer=tiny_tokenizer())


def tiny_gpt2_tokenizer() -> GPT2TokenizerFast:
    """A real GPT2TokenizerFast (byte-level BPE) trained in-process: no download."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(TINY_CAPTIONS * 5, trainer=trainer)
    return GPT2TokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")


def test_processor_prepares_videos_and_training_labels(processor):
    videos = [np.random.randint(0, 255, (7, 40, 48, 3), dtype=np.uint8) for _ in range(2)]
    batch = processor(videos=videos, text=["a red square turns blue", "a green circle grows"], return_tensors="pt")
    assert batch["pixel_values_videos"].shape == (2, 4, 3, 32, 32)
    labels = batch["labels"]
    eos = processor.tokenizer.eos_token_id
    assert labels.shape == (2, 6)  # 5 words + eos
    assert labels[0, 5] == eos and labels[1, 4] == eos and labels[1, 5] == -100
    assert processor.batch_decode(labels) == ["a red square turns blue", "a green circle grows"]


def test_processor_truncates_long_captions_keeping_eos(processor):
    processor.max_caption_length = 3
    labels = processor(text="a red square turns blue")["labels"]
    assert labels.tolist() == [[*processor.tokenizer("a red", add_special_tokens=False)["input_ids"], 0]]


def test_processor_errors(processor):
    with pytest.raises(ValueError, match="needs `videos`, `text`"):
        processor()
    with pytest.raises(ValueError, match="one caption per video"):
        processor(videos=[np.zeros((4, 32, 32, 3), np.uint8)] * 2, text=["one caption"])
    with pytest.raises(TypeError, match="list of strings"):
        processor(text=["ok", 3])


def test_processor_reads_video_files_with_segments(processor, tmp_path):
    clip = write_test_clip(tmp_path / "clip.mp4", num_frames=32, fps=8)
    whole = processor(videos=str(clip))["pixel_values_videos"]
    segment = processor(videos=[str(clip)], start=1.0, end=2.0)["pixel_values_videos"]
    assert whole.shape == segment.shape == (1, 4, 3, 32, 32)
    assert not torch.allclose(whole, segment)


def test_save_load_through_auto_classes(processor, tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VidGPT2Config)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, VidGPT2Processor) and loaded.max_caption_length == processor.max_caption_length
    assert isinstance(AutoVideoProcessor.from_pretrained(tmp_path), VidGPT2VideoProcessor)
    video = np.random.randint(0, 255, (5, 36, 36, 3), dtype=np.uint8)
    assert torch.equal(loaded(videos=video)["pixel_values_videos"], processor(videos=video)["pixel_values_videos"])
    for name in ("processing_vidgpt2.py", "video_processing_vidgpt2.py", "video_io.py"):
        assert (tmp_path / name).is_file(), name


def test_from_backbones_uses_the_backbone_preprocessing_and_a_gpt2_tokenizer(tmp_path):
    ConvNextImageProcessor(size={"shortest_edge": 224}, crop_pct=0.875).save_pretrained(tmp_path / "resnet")
    tiny_gpt2_tokenizer().save_pretrained(tmp_path / "gpt2")
    processor = VidGPT2Processor.from_backbones(str(tmp_path / "resnet"), str(tmp_path / "gpt2"), num_frames=6)
    vp = processor.video_processor
    assert vp.num_frames == 6 and vp.size.shortest_edge == 256 and vp.crop_size.height == 224
    assert processor.tokenizer.pad_token == "<|endoftext|>" == processor.tokenizer.eos_token
    labels = processor(text="a red square")["labels"][0].tolist()
    assert labels[-1] == processor.tokenizer.eos_token_id
    assert processor.decode(labels) == "a red square"


REMOTE = textwrap.dedent(
    """
    import sys
    sys.modules["vidgpt2"] = None  # vidgpt2 cannot be imported: only the folder's code can serve
    import numpy as np, torch
    from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoProcessor, pipeline
    folder, expected_file = sys.argv[1], sys.argv[2]
    expected = torch.load(expected_file)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
    pixels = processor(videos=expected["video"])["pixel_values_videos"]
    assert torch.equal(pixels, expected["pixels"])
    for auto in (AutoModel, AutoModelForSeq2SeqLM):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        logits = model(pixel_values_videos=pixels, labels=expected["labels"]).logits
        assert torch.equal(logits, expected["logits"])
    captioner = pipeline("video-captioning", model=folder, trust_remote_code=True)
    assert captioner(expected["video"], max_new_tokens=5) == expected["pipeline"]
    assert not any(name == "vidgpt2" or name.startswith("vidgpt2.") for name in sys.modules if sys.modules[name])
    print("REMOTE-OK")
    """
)


def test_remote_code_loading_without_vidgpt2(processor, tmp_path):
    """Model, processor and pipeline from a saved folder, in a Python where `import vidgpt2` fails."""
    model = tiny_model()
    captioner = pipeline("video-captioning", model=model, processor=processor)
    folder = tmp_path / "saved"
    captioner.save_pretrained(folder)
    video = np.random.randint(0, 255, (6, 40, 40, 3), dtype=np.uint8)
    pixels = processor(videos=video)["pixel_values_videos"]
    labels = torch.tensor([[3, 4, 0]])
    expected = {
        "video": torch.from_numpy(video),
        "pixels": pixels,
        "labels": labels,
        "logits": model(pixel_values_videos=pixels, labels=labels).logits,
        "pipeline": captioner(torch.from_numpy(video), max_new_tokens=5),
    }
    torch.save(expected, tmp_path / "expected.pt")
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE, str(folder), str(tmp_path / "expected.pt")],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert "REMOTE-OK" in result.stdout, result.stderr[-4000:]
