"""Caption metrics equal pycocoevalcap's own pipeline; the Python tokenisation equals PTB; no-Java drops METEOR."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from vidgpt2.metrics import (
    CAPTION_METRIC_KEYS,
    compute_caption_metrics,
    metric_path,
    ptb_tokenize,
    python_tokenize,
)

FIXTURE = Path(__file__).parent / "fixtures" / "metrics" / "captions.json"
requires_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java (PTBTokenizer and METEOR jars)")
NO_METEOR_KEYS = [key for key in CAPTION_METRIC_KEYS if key != "meteor"]

# (caption, PTB 3.4.1 tokens after pycocoevalcap's punctuation removal), read off the jar.
PTB_CASES = [
    ("A man isn't slicing a tomato.", "a man is n't slicing a tomato"),
    ("The man's dog can't swim; it won't go.", "the man 's dog ca n't swim it wo n't go"),
    (
        "I'm sure they're here, we've seen he'll go, he'd said.",
        "i 'm sure they 're here we 've seen he 'll go he 'd said",
    ),
    ("The dogs' owner wears a t-shirt -- and a hat...", "the dogs owner wears a t-shirt and a hat"),
    ('She said "hello" (quietly).', "she said hello -lrb- quietly -rrb-"),
    (
        "He paid $5.50 for 10% of 1,000 apples at 3:30 p.m. today.",
        "he paid $ 5.50 for 10 % of 1,000 apples at 3:30 p.m. today",
    ),
    ("isn’t it’s “quoted” ‘single’ — done…", "is n't it 's quoted single done"),
    ("A WOMAN IS DANCING!!! Wow?! ok...", "a woman is dancing !!! wow ?! ok"),
    ("cannot gonna wanna gotta lemme gimme", "can not gon na wan na got ta lem me gim me"),
    (
        "Mr. Smith met U.S. officials in St. Louis etc. Then left.",
        "mr. smith met u.s. officials in st. louis etc. then left",
    ),
    ("the letter A. The man writes plan b.", "the letter a the man writes plan b."),
    ("a man is walking. he sits down -- slowly.", "a man is walking he sits down slowly"),
    ("-word word- x--y a*b AT&T a&b e-mail 3-d", "word word x y a * b at&t a & b e-mail 3-d"),
    ("'tis o'clock rock'n'roll y'all 'em '90s the 'cat'", "'t is o'clock rock 'n' roll y' all 'em '90s the cat"),
    ('a man said,"hi" [loudly] {ok}', "a man said hi -lsb- loudly -rsb- -lcb- ok -rcb-"),
    ("a man 's dog is n't here , they 're ok .", "a man 's dog is n't here they 're ok"),
    ("a man is holding a... the cat., and he's 6'2\" tall", "a man is holding a. the cat. and he 's 6 2 tall"),
    ("", ""),
]


def _load_captions() -> tuple[list[str], list[list[str]]]:
    samples = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return [sample["prediction"] for sample in samples], [sample["references"] for sample in samples]


class _CocoStub:
    """The two things COCOEvalCap reads from a pycocotools ``COCO`` object."""

    def __init__(self, captions_per_image: list[list[str]]) -> None:
        self.imgToAnns = {
            image_id: [{"image_id": image_id, "caption": caption} for caption in captions]
            for image_id, captions in enumerate(captions_per_image)
        }

    def getImgIds(self) -> list[int]:  # noqa: N802 (pycocotools' name)
        return list(self.imgToAnns)


class _NoSpice:
    """SPICE downloads Stanford models and is not one of our metrics; everything else is COCOEvalCap's own."""

    def compute_score(self, gts: dict, res: dict) -> tuple[float, list[float]]:
        return 0.0, [0.0] * len(res)

    def method(self) -> str:
        return "SPICE"


def _coco_eval_cap(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """pycocoevalcap's reference pipeline: ``COCOEvalCap.evaluate`` (PTBTokenizer, Bleu, Meteor, Rouge, Cider)."""
    from pycocoevalcap.eval import COCOEvalCap

    evaluator = COCOEvalCap(_CocoStub(references), _CocoStub([[p] for p in predictions]))
    evaluator.evaluate()
    names = {"Bleu_1": "bleu_1", "Bleu_2": "bleu_2", "Bleu_3": "bleu_3", "Bleu_4": "bleu_4"}
    names |= {"METEOR": "meteor", "ROUGE_L": "rouge_l", "CIDEr": "cider"}
    return {ours: float(evaluator.eval[theirs]) for theirs, ours in names.items()}


def _java_children() -> list[psutil.Process]:
    return [child for child in psutil.Process().children(recursive=True) if "java" in child.name()]


@pytest.fixture(scope="module")
def captions() -> tuple[list[str], list[list[str]]]:
    return _load_captions()


def test_fixture_is_realistic(captions):
    predictions, references = captions
    assert len(predictions) >= 50
    assert all(3 <= len(refs) <= 5 for refs in references)


@requires_java
def test_equals_pycocoevalcap_pipeline(captions):
    """Ours (PTB + METEOR) equals COCOEvalCap, stops its Java process, and the Python path equals it without METEOR.

    One test, not a shared fixture, so pytest-xdist never starts these ~10 s METEOR jars twice; ours and
    COCOEvalCap run side by side in two threads.
    """
    predictions, references = captions
    with pytest.MonkeyPatch.context() as patch, ThreadPoolExecutor(max_workers=2) as pool:
        patch.setattr("pycocoevalcap.eval.Spice", _NoSpice)
        ours_future = pool.submit(compute_caption_metrics, predictions, references)
        theirs = pool.submit(_coco_eval_cap, predictions, references).result()
        ours = ours_future.result()
    assert list(ours) == list(CAPTION_METRIC_KEYS)
    for key in CAPTION_METRIC_KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
    assert 0.0 < ours["bleu_4"] < ours["bleu_1"] < 1.0  # a real, imperfect score, not a degenerate one
    assert _java_children() == [], "a METEOR/PTB java process outlived compute_caption_metrics"

    python_path = compute_caption_metrics(predictions, references, use_java=False)
    for key in NO_METEOR_KEYS:
        assert python_path[key] == pytest.approx(ours[key], abs=1e-6), key


@requires_java
def test_python_tokenizer_equals_ptb_jar(captions):
    predictions, references = captions
    texts = [*predictions, *(ref for refs in references for ref in refs), *(case for case, _ in PTB_CASES)]
    assert python_tokenize(texts) == ptb_tokenize(texts)


@pytest.mark.parametrize(("caption", "expected"), PTB_CASES)
def test_python_tokenizer_follows_ptb_rules(caption, expected):
    assert python_tokenize([caption]) == [expected]


def test_no_java_reports_meteor_unavailable(captions, monkeypatch, caplog):
    def no_subprocess(*args, **kwargs):
        raise AssertionError("no Java process may start without Java")

    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    with caplog.at_level(logging.WARNING, logger="vidgpt2.metrics"):
        scores = compute_caption_metrics(*captions)
    assert list(scores) == NO_METEOR_KEYS
    assert "meteor" not in scores
    assert any("METEOR not computed" in record.getMessage() for record in caplog.records)
    with pytest.raises(RuntimeError, match="java"):
        compute_caption_metrics(*captions, use_java=True)
    with pytest.raises(RuntimeError, match="java"):
        compute_caption_metrics(*captions, tokenizer="ptb")


def test_failing_meteor_process_raises_and_is_stopped(captions, monkeypatch):
    real_popen = subprocess.Popen
    started: list[subprocess.Popen] = []

    def garbage_meteor(cmd, **kwargs):  # answers every line with garbage instead of a score
        script = "import sys\nfor _ in sys.stdin:\n    print('oops', flush=True)"
        started.append(real_popen([sys.executable, "-c", script], **kwargs))
        return started[-1]

    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: "/usr/bin/java")
    monkeypatch.setattr(subprocess, "Popen", garbage_meteor)
    with pytest.raises(RuntimeError, match="METEOR"):
        compute_caption_metrics(*captions, tokenizer="python", use_java=True)
    assert len(started) == 1
    assert started[0].poll() is not None


def test_ptb_tokenizer_without_java_use_is_rejected(captions):
    with pytest.raises(ValueError, match="tokenizer='ptb'"):
        compute_caption_metrics(*captions, tokenizer="ptb", use_java=False)


def test_perfect_predictions_score_bleu_one(captions):
    _, references = captions
    scores = compute_caption_metrics([refs[0] for refs in references], references, use_java=False)
    for n in range(1, 5):
        assert scores[f"bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(1.0, abs=1e-6)


def test_evaluate_module_equals_function(captions):
    import evaluate

    metric = evaluate.load(metric_path("coco_caption"), keep_in_memory=True)
    from_module = metric.compute(predictions=captions[0], references=captions[1], use_java=False)
    assert from_module == compute_caption_metrics(*captions, use_java=False)


def test_metric_path_unknown_name():
    with pytest.raises(ValueError, match="coco_caption"):
        metric_path("nope")


@pytest.mark.parametrize(
    ("predictions", "references", "error", "message"),
    [
        (["a", "b"], [["a"]], ValueError, "2 predictions and 1 references"),
        ([], [], ValueError, "predictions is empty"),
        (["a", "b"], [["a"], []], ValueError, r"references\[1\] is empty"),
        (["a", 3], [["a"], ["b"]], TypeError, r"predictions\[1\] must be a string"),
        (["a", "b"], [["a"], ["b", None]], TypeError, r"references\[1\]\[1\] must be a string"),
        (["a", "b"], ["a", "b"], TypeError, r"references\[0\] must be a list"),
        ("a man", [["a man"]], TypeError, "predictions must be a list"),
    ],
)
def test_bad_inputs_raise(predictions, references, error, message):
    with pytest.raises(error, match=message):
        compute_caption_metrics(predictions, references, use_java=False)


def test_unknown_tokenizer_raises(captions):
    with pytest.raises(ValueError, match="tokenizer must be"):
        compute_caption_metrics(*captions, tokenizer="nltk", use_java=False)
