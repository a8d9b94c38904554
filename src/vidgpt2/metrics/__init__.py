"""Caption metrics equal to pycocoevalcap's (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D), plus offline `evaluate` modules.

>>> from vidgpt2.metrics import compute_caption_metrics
>>> compute_caption_metrics(["a man is slicing a tomato"], [["A man slices a tomato.", "Someone cuts a tomato."]])

or, through `evaluate` (no Hub access needed):

>>> import evaluate
>>> metric = evaluate.load(metric_path("coco_caption"))
>>> metric.compute(predictions=[...], references=[[...], ...])
"""

from pathlib import Path

from vidgpt2.metrics.coco import CAPTION_METRIC_KEYS, compute_caption_metrics
from vidgpt2.metrics.tokenization import ptb_tokenize, python_tokenize

__all__ = ["CAPTION_METRIC_KEYS", "compute_caption_metrics", "metric_path", "ptb_tokenize", "python_tokenize"]

_METRICS_DIR = Path(__file__).resolve().parent


def metric_path(name: str) -> str:
    """Path of an `evaluate` metric script shipped with vidgpt2, for ``evaluate.load(metric_path(name))``."""
    path = _METRICS_DIR / name / f"{name}.py"
    if not path.is_file():
        available = sorted(p.parent.name for p in _METRICS_DIR.glob("*/*.py") if p.stem == p.parent.name)
        raise ValueError(f"No vidgpt2 metric named {name!r}; available: {available}.")
    return str(path)
