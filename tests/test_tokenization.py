"""Caption tokenisation: line breaks inside captions (issue 10 item 7) and non-ASCII captions (item 8)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from vidgpt2.metrics import coco, compute_caption_metrics, ptb_tokenize, python_tokenize, tokenization

requires_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java (PTBTokenizer jar)")

# \v, \f, U+2028 and U+2029 end a line for the PTB jar (as \n and \r do); the others are line breaks for Python's
# str.splitlines, and NUL. Written out, not imported, so that the test also runs against code without LINE_BREAKS.
LINE_BREAKS = "\n\r\x0b\x0c\u2028\u2029\x1c\x1d\x1e\x85\x00"


# --------------------------------------------------------------------------------------------------------------------
# Item 7: one caption stays one line
# --------------------------------------------------------------------------------------------------------------------


@requires_java
@pytest.mark.parametrize("tokenize", [ptb_tokenize, python_tokenize], ids=["ptb", "python"])
def test_line_break_characters_do_not_split_captions(tokenize):
    captions = [f"a man{char}is cooking" for char in LINE_BREAKS] + ["a dog runs.", "a CAT\r\nsleeps"]
    expected = ["a man is cooking"] * len(LINE_BREAKS) + ["a dog runs", "a cat sleeps"]
    assert tokenize(captions) == expected


@requires_java
def test_scraped_line_separators_score_identical_captions_one(monkeypatch):
    """The issue's case: three predictions equal to their references scored BLEU-4 0.0 with the jar."""
    monkeypatch.setattr(coco, "_meteor", lambda gts, res: 0.0)  # METEOR's 10 s jar is not what this test is about
    predictions = ["a man\u2028is slicing a tomato", "a woman\u2029sings a song\x0bloudly", "a dog\x0cruns on grass"]
    references = [[prediction] for prediction in predictions]
    for tokenizer in ("ptb", "python"):
        scores = compute_caption_metrics(predictions, references, tokenizer=tokenizer, use_java=True)
        assert scores["bleu_4"] == pytest.approx(1.0, abs=1e-6), tokenizer
        assert scores["rouge_l"] == pytest.approx(1.0, abs=1e-6), tokenizer


@pytest.mark.parametrize("stdout", ["a man\nis cooking\na dog", "a man is cooking"], ids=["more_lines", "fewer_lines"])
def test_ptb_line_count_mismatch_raises(monkeypatch, stdout):
    """Any difference between captions in and lines out is an error, never a silent truncation or misalignment."""

    def fake_jar(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 0, stdout=stdout.encode(), stderr=b"")

    monkeypatch.setattr(tokenization.shutil, "which", lambda name, *args, **kwargs: "/usr/bin/java")
    monkeypatch.setattr(tokenization.subprocess, "run", fake_jar)
    with pytest.raises(RuntimeError, match="returned [0-9]+ lines for 2 captions"):
        ptb_tokenize(["a man is cooking", "a dog"])
