"""The README's main job, `vidgpt2 demo`, end to end at a smoke-test size (the real run is `make demo`)."""

import json

import pytest

from vidgpt2.cli import main
from vidgpt2.data import CAPTION_FAMILIES


def test_demo_runs_end_to_end_and_writes_its_results(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--output-dir", str(out), "--num-train", "16", "--num-test", "2", "--epochs", "1", "--image-size", "32"]
    args += ["--baseline-epochs", "2"]
    assert main(args) == 0

    printed = capsys.readouterr().out
    assert "blank frames, 2 epochs" in printed
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in printed
    assert "order-word accuracy" in printed and "predicted:" in printed
    assert "n/a" in printed  # the families the 2 test clips miss

    # the video model trained from the frame cache: every clip of every split decoded once, at the model's size
    frames = list((out / "frames_32px" / "frames").glob("*.npy"))
    assert len(frames) == 16 + 2 + 16  # train, test, validation (max(16, num_test // 4))

    results = json.loads((out / "demo_results.json").read_text())
    for name in ("vidgpt2", "text_only"):
        scores = results[name]
        assert set(scores["exact_match"]) >= {"all", *CAPTION_FAMILIES}
        assert 0.0 <= scores["exact_match"]["all"] <= 1.0
        # 2 test clips cannot cover the 4 caption families: the missing ones are None (n/a in the table), no KeyError
        assert sum(scores["exact_match"][f] is None for f in CAPTION_FAMILIES) >= 2
        assert scores["order_accuracy"] is None or 0.0 <= scores["order_accuracy"] <= 1.0
        assert 0 <= scores["order_decided"] <= 2
        assert "test_cider" in scores and "test_bleu_4" in scores
        assert (out / name / "model.safetensors").is_file() and (out / name / "metrics.json").is_file()
    # the baseline trains for its own number of epochs (by default 10, or --epochs if fewer)
    assert results["vidgpt2"]["train_epoch"] == 1.0 and results["text_only"]["train_epoch"] == 2.0


@pytest.mark.parametrize("flag", ["--epochs", "--baseline-epochs"])
@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_demo_refuses_epochs_that_train_nothing(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--output-dir", str(tmp_path / "demo"), flag, value])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # refused before any work
