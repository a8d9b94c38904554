"""`evaluate` module for COCO caption metrics, equal to pycocoevalcap; loads offline.

    import evaluate
    from vidgpt2.metrics import metric_path

    coco = evaluate.load(metric_path("coco_caption"))
    coco.compute(predictions=["a man is slicing a tomato"], references=[["A man slices a tomato."]])

It delegates to `vidgpt2.metrics.compute_caption_metrics` (see there for tokenisation and the no-Java behaviour).
"""

import datasets
import evaluate

from vidgpt2.metrics import compute_caption_metrics

_CITATION = """\
@inproceedings{lin2014microsoft,
  title={Microsoft COCO: Common Objects in Context},
  author={Lin, Tsung-Yi and others},
  booktitle={ECCV},
  year={2014}
}
@inproceedings{vedantam2015cider,
  title={CIDEr: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={CVPR},
  year={2015}
}
"""

_DESCRIPTION = """\
COCO caption metrics as computed by pycocoevalcap: corpus BLEU-1..4, METEOR 1.5 (Java), ROUGE-L (beta 1.2) and
CIDEr-D, after PTB tokenisation and punctuation removal. Scores are on pycocoevalcap's 0-1 scale (CIDEr unscaled).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated captions, one per sample.
    references: list of lists of reference captions, at least one per sample.
    tokenizer: "auto" (default), "ptb" (Stanford PTBTokenizer, Java) or "python" (pure-Python equivalent).
    use_java: None (default: use Java if on PATH), True (require it) or False (no Java: no METEOR).
Returns:
    dict with bleu_1, bleu_2, bleu_3, bleu_4, meteor (only when Java is used), rouge_l, cider.
Examples:
    >>> coco = evaluate.load(metric_path("coco_caption"))
    >>> coco.compute(predictions=["a man is slicing a tomato"], references=[["a man is slicing a tomato"]])["bleu_4"]
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CocoCaption(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string", id="sequence"),
                    "references": datasets.Sequence(datasets.Value("string", id="sequence"), id="references"),
                }
            ),
            reference_urls=["https://github.com/salaniz/pycocoevalcap"],
        )

    def _compute(self, predictions, references, tokenizer="auto", use_java=None):
        return compute_caption_metrics(predictions, references, tokenizer=tokenizer, use_java=use_java)
