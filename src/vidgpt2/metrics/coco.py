"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) computed exactly as pycocoevalcap computes them.

The scorers are pycocoevalcap's own classes (``Bleu(4)``, ``Meteor``, ``Rouge``, ``Cider``) fed the same tokenised
captions that ``pycocoevalcap.eval.COCOEvalCap`` feeds them, so the numbers equal that pipeline's. Only the
tokenisation (see :mod:`vidgpt2.metrics.tokenization`) and the METEOR process handling are ours.

Java: pycocoevalcap's PTB tokenizer and METEOR 1.5 are Java programs. Without Java the captions are tokenised by
:func:`~vidgpt2.metrics.tokenization.python_tokenize` (equal to PTB on ordinary captions) and METEOR is *not*
reported: the ``meteor`` key is left out and a warning is logged. It is never replaced by another implementation
(NLTK's meteor is a different metric).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
from collections.abc import Sequence
from typing import Literal

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from vidgpt2.metrics.tokenization import ptb_tokenize, python_tokenize

logger = logging.getLogger(__name__)

TokenizerName = Literal["auto", "ptb", "python"]

CAPTION_METRIC_KEYS: tuple[str, ...] = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
"""Keys of :func:`compute_caption_metrics`'s result, in order (``meteor`` only when Java is used)."""


class _ClosingMeteor(Meteor):
    """pycocoevalcap's ``Meteor`` that closes its Java process deterministically.

    pycocoevalcap only stops the process in ``__del__``, which takes the instance lock: if ``compute_score`` raised
    while holding that lock, ``__del__`` would block forever, and if ``java`` failed to start it raises
    ``AttributeError``. ``close`` (also used as a context manager) is idempotent and never waits on the lock.
    """

    def __enter__(self) -> _ClosingMeteor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        process: subprocess.Popen[bytes] | None = getattr(self, "meteor_p", None)
        if process is None:
            return
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):  # flushing stdin into a dead process raises BrokenPipeError
                    stream.close()
        process.kill()
        process.wait()
        self.meteor_p = None

    def __del__(self) -> None:
        self.close()


def _validate(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    """Raise ``TypeError``/``ValueError`` naming the offending input and index."""
    if isinstance(predictions, str) or not isinstance(predictions, Sequence):
        raise TypeError(f"predictions must be a list of strings, got {type(predictions).__name__}.")
    if isinstance(references, str) or not isinstance(references, Sequence):
        raise TypeError(f"references must be a list of lists of strings, got {type(references).__name__}.")
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have the same length, got {len(predictions)} predictions "
            f"and {len(references)} references."
        )
    if not predictions:
        raise ValueError("predictions is empty: pass at least one caption to score.")
    for index, (prediction, sample_references) in enumerate(zip(predictions, references)):
        if not isinstance(prediction, str):
            raise TypeError(f"predictions[{index}] must be a string, got {type(prediction).__name__}.")
        if isinstance(sample_references, str) or not isinstance(sample_references, Sequence):
            raise TypeError(
                f"references[{index}] must be a list of strings (one or more captions per sample), "
                f"got {type(sample_references).__name__}."
            )
        if not sample_references:
            raise ValueError(f"references[{index}] is empty: every sample needs at least one reference caption.")
        for ref_index, reference in enumerate(sample_references):
            if not isinstance(reference, str):
                raise TypeError(f"references[{index}][{ref_index}] must be a string, got {type(reference).__name__}.")


def _resolve_java(use_java: bool | None) -> bool:
    """``None`` means "if ``java`` is on PATH"; ``True`` requires it."""
    java_found = shutil.which("java") is not None
    if use_java and not java_found:
        raise RuntimeError("use_java=True but no `java` on PATH: install a JRE (e.g. openjdk-17-jre-headless).")
    return java_found if use_java is None else use_java


def _tokenize(
    predictions: Sequence[str], references: Sequence[Sequence[str]], use_ptb: bool
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Tokenise everything in one pass and return pycocoevalcap's ``gts``/``res`` dicts keyed by sample index."""
    captions = [*predictions, *(reference for sample in references for reference in sample)]
    tokenized = ptb_tokenize(captions) if use_ptb else python_tokenize(captions)
    res = {index: [tokenized[index]] for index in range(len(predictions))}
    gts: dict[int, list[str]] = {}
    offset = len(predictions)
    for index, sample in enumerate(references):
        gts[index] = tokenized[offset : offset + len(sample)]
        offset += len(sample)
    return gts, res


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> float:
    """METEOR 1.5 via pycocoevalcap's jar; the Java process is always stopped before returning."""
    with _ClosingMeteor() as meteor:
        try:
            score, _ = meteor.compute_score(gts, res)
        except (ValueError, OSError) as error:  # a garbled line, or a broken pipe: the jar died or printed an error
            process = meteor.meteor_p
            stderr = process.stderr.read() if process is not None and process.poll() is not None else b""
            raise RuntimeError(f"METEOR (java) failed: {error}; {stderr.decode(errors='replace').strip()}") from error
    return float(score)


def compute_caption_metrics(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    tokenizer: TokenizerName = "auto",
    use_java: bool | None = None,
) -> dict[str, float]:
    """Corpus caption metrics on pycocoevalcap's scale (0-1; CIDEr-D unscaled, roughly 0-10).

    Args:
        predictions: one generated caption per sample.
        references: one non-empty list of reference captions per sample.
        tokenizer: ``"ptb"`` runs pycocoevalcap's Stanford PTBTokenizer jar (needs Java), ``"python"`` the
            pure-Python equivalent :func:`~vidgpt2.metrics.tokenization.python_tokenize`, ``"auto"`` picks
            ``"ptb"`` when Java is used and ``"python"`` otherwise.
        use_java: ``None`` uses Java when ``java`` is on PATH; ``False`` never runs Java (Python tokenisation, no
            METEOR); ``True`` requires it.

    Returns:
        ``bleu_1`` .. ``bleu_4`` (corpus BLEU, pycocoevalcap ``Bleu(4)``, closest reference length), ``meteor``
        (METEOR 1.5, only when Java is used; otherwise the key is absent and a warning is logged), ``rouge_l``
        (ROUGE-L F, beta 1.2, best reference, averaged), ``cider`` (CIDEr-D, document frequencies from these
        references, so it depends on the whole set).

    Raises:
        TypeError: a prediction or reference is not a string, or references[i] is not a list.
        ValueError: lengths differ, predictions is empty, or a sample has no reference.
        RuntimeError: Java was required (``use_java=True`` or ``tokenizer="ptb"``) but is missing, or it failed.

    Each call starts (and always stops) its own METEOR 1.5 Java process, which takes about 10 s to load its
    paraphrase table, and tokenises in its own temporary directory, so concurrent calls from threads are safe.
    """
    _validate(predictions, references)
    if tokenizer not in ("auto", "ptb", "python"):
        raise ValueError(f"tokenizer must be 'auto', 'ptb' or 'python', got {tokenizer!r}.")
    if tokenizer == "ptb" and use_java is False:
        raise ValueError("tokenizer='ptb' runs Java but use_java=False; use tokenizer='python' or allow Java.")
    java = _resolve_java(True if tokenizer == "ptb" else use_java)
    use_ptb = tokenizer == "ptb" or (tokenizer == "auto" and java)
    gts, res = _tokenize(predictions, references, use_ptb=use_ptb)
    logger.debug("Scoring %d captions (tokenizer=%s, java=%s).", len(res), "ptb" if use_ptb else "python", java)

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    results = {f"bleu_{n}": float(score) for n, score in enumerate(bleu, start=1)}
    if java:
        results["meteor"] = _meteor(gts, res)
    elif use_java is None:  # Java was wanted but is missing (an explicit use_java=False needs no warning)
        logger.warning(
            "METEOR not computed: it needs Java (METEOR 1.5 jar). The 'meteor' key is left out; install a JRE "
            "to report it. No substitute (e.g. NLTK meteor) is used."
        )
    rouge, _ = Rouge().compute_score(gts, res)
    results["rouge_l"] = float(rouge)
    cider, _ = Cider().compute_score(gts, res)
    results["cider"] = float(cider)
    return results
