"""Tokenizers built from captions, for models trained from scratch (no pretrained GPT-2 vocabulary).

A word-level vocabulary from the training captions keeps tiny models tiny: a few hundred ids instead of 50,257.
The result is a regular `PreTrainedTokenizerFast`, saved and loaded like any Hugging Face tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<unk>"


def build_word_level_tokenizer(captions: Iterable[str], min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over `captions`.

    `<|endoftext|>` (id 0) is bos, eos and pad, as in GPT-2; `<unk>` (id 1) covers words not seen in training.
    Punctuation is split off words, so "turns red." -> ["turns", "red", "."].
    """
    backend = Tokenizer(models.WordLevel(unk_token=UNK_TOKEN))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins words with spaces, tidies punctuation
    trainer = trainers.WordLevelTrainer(min_frequency=min_frequency, special_tokens=[EOS_TOKEN, UNK_TOKEN])
    captions = [c for c in captions if isinstance(c, str) and c.strip()]
    if not captions:
        raise ValueError("build_word_level_tokenizer needs at least one non-empty caption.")
    backend.train_from_iterator(captions, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
    )


__all__ = ["build_word_level_tokenizer"]
