"""Caption tokenisation exactly as pycocoevalcap does it, with a pure-Python twin for machines without Java.

pycocoevalcap tokenises every caption with Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase``
(a Java jar it ships) and then drops the tokens in its ``PUNCTUATIONS`` list. Two functions here produce that:

- :func:`ptb_tokenize` runs the same jar with the same flags. Unlike ``pycocoevalcap.tokenizer.PTBTokenizer`` it
  writes its input file to a fresh temporary directory instead of pycocoevalcap's own package folder (which may be
  read-only, e.g. a system site-packages), and it checks the exit status and the number of lines that come back.
- :func:`python_tokenize` re-implements the subset of the PTB lexer that captions use, without Java:
  lower-casing; splitting off ``. , ; : ? ! ... " ( ) [ ] { } % $ #`` and hyphens at word edges; clitics
  (``isn't -> is n't``, ``can't -> ca n't``, ``man's -> man 's``, ``'m 're 've 'll 'd``, ``dogs' -> dogs '``);
  ``cannot gonna gotta wanna gimme lemme 'tis 'twas``; keeping hyphenated words, numbers (``1.5``, ``1,000``,
  ``3:30``), single-letter acronyms (``u.s.``, ``p.m.``, ``a.``) and the common abbreviations (``mr.``, ``etc.``)
  whole; curly quotes, dashes and ``…`` normalised as PTB does. Brackets become ``-lrb-`` ... ``-rcb-`` and runs of
  ``?``/``!`` stay one token, as in PTB: after lower-casing they no longer match pycocoevalcap's punctuation list,
  so they are kept there too.

  Checked token for token against the jar on the test fixture and on thousands of generated caption-like lines
  with punctuation attached. Known differences (none occur in ordinary captions): SGML/HTML tags and entities
  (``&amp;``), emoticons, clock times glued to letters (``12:30pm``), a comma glued to a following digit (``a,1``),
  the ``th'`` prefix, mixed-case abbreviations such as ``Ph.D.``, a negative number glued to a hyphenated word
  (``-3-d``) and the rarer PTB abbreviations.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pycocoevalcap.tokenizer import ptbtokenizer

logger = logging.getLogger(__name__)

PTB_JAR: Path = Path(ptbtokenizer.__file__).resolve().parent / ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR
"""The Stanford CoreNLP 3.4.1 jar that pycocoevalcap ships and uses."""

PUNCTUATIONS: frozenset[str] = frozenset(ptbtokenizer.PUNCTUATIONS)
"""Tokens pycocoevalcap removes after PTB tokenisation (compared with the lower-cased tokens)."""


LINE_BREAKS: str = "\n\r\x0b\x0c\u2028\u2029\x1c\x1d\x1e\x85\x00"
"""Characters replaced by a space in every caption before tokenising (by both tokenisers, so both sides agree).

The PTB jar reads one caption per line; ``\\n``, ``\\r``, vertical tab, form feed, U+2028 and U+2029 each end a line
for it (found by running the jar on every code point), so a caption holding one would shift every later caption onto
the wrong reference. ``\\x1c``-``\\x1e`` and U+0085 (NEL) are line breaks for Python's ``str.splitlines``, and NUL
ends a C string; neither tokeniser gives them a token.
"""

_LINE_BREAKS_TO_SPACE = str.maketrans(dict.fromkeys(LINE_BREAKS, " "))


def normalize_line_breaks(caption: str) -> str:
    """``caption`` with every character of :data:`LINE_BREAKS` replaced by a space (one caption stays one line)."""
    return caption.translate(_LINE_BREAKS_TO_SPACE)


def remove_punctuation(tokenized_line: str) -> str:
    """Drop pycocoevalcap's punctuation tokens from one space-separated PTB output line, as pycocoevalcap does."""
    return " ".join(word for word in tokenized_line.rstrip().split(" ") if word not in PUNCTUATIONS)


# --------------------------------------------------------------------------------------------------------------------
# Java: the real PTBTokenizer
# --------------------------------------------------------------------------------------------------------------------


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """Tokenise captions with pycocoevalcap's Stanford PTBTokenizer jar (needs ``java`` on PATH).

    Same command, flags and punctuation removal as ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer``; the input
    file goes to a private temporary directory. Returns one space-joined token string per caption, in order.
    """
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "PTB tokenisation needs Java: install a JRE so `java` is on PATH, or use tokenizer='python'."
        )
    if not captions:
        return []
    # pycocoevalcap replaces only "\n"; \r, \v, \f, U+2028 and U+2029 split lines in the jar too.
    text = "\n".join(normalize_line_breaks(caption) for caption in captions)
    with tempfile.TemporaryDirectory(prefix="vidgpt2_ptb_") as tmp_dir:
        input_path = Path(tmp_dir) / "captions.txt"
        input_path.write_bytes(text.encode("utf-8"))
        cmd = [java, "-cp", str(PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
        completed = subprocess.run([*cmd, str(input_path)], capture_output=True, check=False)
    if completed.returncode != 0:
        stderr = completed.stderr.decode("utf-8", errors="replace").strip()
        raise RuntimeError(f"PTBTokenizer (java) exited with status {completed.returncode}: {stderr}")
    lines = completed.stdout.decode("utf-8").split("\n")
    logger.debug("PTBTokenizer tokenised %d captions.", len(captions))
    if len(lines) != len(captions):  # a caption split into two lines, or two joined: tokens would be misaligned
        raise RuntimeError(
            f"PTBTokenizer returned {len(lines)} lines for {len(captions)} captions, so tokens cannot be matched to "
            "their captions; a caption probably holds a line-break character not in LINE_BREAKS: please report it."
        )
    return [remove_punctuation(line) for line in lines]


# --------------------------------------------------------------------------------------------------------------------
# Pure Python: the PTB rules that captions need
# --------------------------------------------------------------------------------------------------------------------

# Characters PTB normalises before anything else (curly quotes, dashes, ellipsis, no-break space).
_NORMALISE = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "`",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "--",
        "\u2014": "--",
        "\u2026": "...",
        "\u00a0": " ",
    }
)
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_INNER_TOKENS = {**_BRACKETS, '"': "''"}
# Words with a leading apostrophe that PTB keeps whole ('90s, 'em, 'n', pre-split clitics as in "man 's") or splits
# specially ('tis -> 't is).
_APOSTROPHE_WORDS = re.compile(r"'(?:s|m|d|re|ve|ll|em|n'|cause|til|till|\d0s|tis|twas)(?![\w'])", re.IGNORECASE)
_SPECIAL_WORDS = {
    "cannot": ["can", "not"],
    "gonna": ["gon", "na"],
    "gotta": ["got", "ta"],
    "wanna": ["wan", "na"],
    "gimme": ["gim", "me"],
    "lemme": ["lem", "me"],
    "'tis": ["'t", "is"],
    "'twas": ["'t", "was"],
}
_CLITIC = re.compile(r"^(.*[^\W_])(n't|'s|'m|'re|'ve|'ll|'d)$", re.IGNORECASE)
# Abbreviations PTB 3.4.1 keeps with their period (checked against the jar); any acronym like a. u.s. p.m. too.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr drs prof jr sr st mt ft inc co corp ltd vs etc al jan feb mar apr jun jul aug sep sept oct nov dec"
    " gen col lt sgt capt rev gov sen rep".split()
)
_NUMBER_ABBREVIATIONS = frozenset("no fig figs art pp ca".split())  # kept only before a number ("no. 5")
_ACRONYM = re.compile(r"[a-z](?:\.[a-z])*", re.IGNORECASE)
_UPPER_AMPERSAND = re.compile(r"[A-Z]+(?:&[A-Z]+)+")
# Separators PTB splits off inside a chunk: a&b, x--y, a*b, man(left), said,"hi", a;b, a:b (not 1,000 or 3:30), 6'2,
# rock'n'roll.
_INNER_SPLIT = re.compile(
    r"(--+|\*+|&|[()\[\]{}\"`;]|(?<!\d)[,:](?!//)|[,:](?!\d|//)|(?<=\d)'(?=\d)|(?<=[^\W_])'n'(?=[^\W_]))"
)
# A capitalised word after "A." that makes PTB read the period as a sentence end ("the letter A. The man ...").
_SENTENCE_STARTERS = frozenset(
    "A About According Additionally After All Also Although An Another As At Before Both But By Did During Each"
    " Earlier Following For From He Her Here His How However If In It Its Last Later Many More Most Mr. Mrs. Ms."
    " Now On Once One Other Our She Since So Some Such That The Their Then There These They This Two Under Upon We"
    " When While What Who Why Yet You".split()
)


def _keeps_period(stem: str, following: str) -> bool:
    """Whether PTB keeps ``stem + '.'`` as one token (an abbreviation or acronym) instead of splitting the period.

    ``following`` is the token right after the period, or ``" " + next_chunk`` when whitespace follows.
    """
    lower = stem.lower()
    if following in (",", ";", ":") and stem.isalnum():  # "cat.," -> "cat." ","
        return True
    if lower in _ABBREVIATIONS:
        return True
    if lower in _NUMBER_ABBREVIATIONS:
        return following.lstrip()[:1].isdigit()
    if _ACRONYM.fullmatch(stem):  # a. u.s. p.m.; a single letter before " The", " He", ... ends the sentence
        return len(stem) > 1 or not following.startswith(" ") or following[1:].rstrip("?!") not in _SENTENCE_STARTERS
    return False


def _split_leading(chunk: str) -> tuple[str | None, str]:
    """Split one PTB token off the start of ``chunk``; ``(None, chunk)`` when nothing splits."""
    first = chunk[0]
    if first == '"':
        return "``", chunk[1:]
    if first in _BRACKETS:
        return _BRACKETS[first], chunk[1:]
    if first == "`":
        return ("``", chunk[2:]) if chunk.startswith("``") else ("`", chunk[1:])
    if first == "'" and len(chunk) > 1 and not _APOSTROPHE_WORDS.match(chunk):
        return "`", chunk[1:]
    if first in ",;:" or (first in "$#" and chunk[1:2].isdigit()):
        return first, chunk[1:]
    if match := re.match(r"\.\.\.+|[?!]+|-+", chunk):
        token = match.group()
        if token.startswith(".") or not (token == "-" and chunk[1:2].isdigit()):  # "-5" is a number
            return ("..." if token.startswith(".") else token), chunk[len(token) :]
    if first == "." and not chunk[1:2].isdigit():  # ".5" is a number
        return ".", chunk[1:]
    return None, chunk


def _split_trailing(chunk: str, following: str) -> tuple[str | None, str]:
    """Split one PTB token off the end of ``chunk`` (``following`` as in ``_keeps_period``); ``None`` if none."""
    last = chunk[-1]
    if last == '"':
        return "''", chunk[:-1]
    if last in _BRACKETS:
        return _BRACKETS[last], chunk[:-1]
    if last == "'" and not _APOSTROPHE_WORDS.fullmatch(chunk):
        return "'", chunk[:-1]
    if last in ",;:%":
        return last, chunk[:-1]
    if match := re.search(r"[?!]+$|-+$", chunk):
        return match.group(), chunk[: match.start()]
    if match := re.search(r"\.+$", chunk):
        dots, stem = match.group(), chunk[: match.start()]
        if stem and _keeps_period(stem, following):  # "mr...." -> "mr." "...", "a.." -> "a." "."
            dots, stem = dots[1:], stem + "."
        if len(dots) >= 3:
            return "...", stem
        if dots:  # "yes.." -> "yes" "." "."
            return ".", chunk[:-1]
    return None, chunk


def _split_core(core: str) -> list[str]:
    """Split clitics, PTB's special words and inner ``--``/``*``/``&``/``'n'`` of a chunk with clean edges."""
    if core.lower() in _SPECIAL_WORDS:
        return list(_SPECIAL_WORDS[core.lower()])
    if core[:2].lower() == "y'" and len(core) > 2:  # y'all -> y' all
        return [core[:2], *_split_core(core[2:])]
    if match := _CLITIC.match(core):  # isn't -> is n't, can't -> ca n't, i'd've -> i 'd 've
        stem, clitic = match.groups()
        return [*_split_core(stem), clitic]
    if _UPPER_AMPERSAND.fullmatch(core):  # AT&T stays whole, a&b splits
        return [core]
    parts = [part for part in _INNER_SPLIT.split(core) if part]
    if len(parts) == 1:
        return [core]
    return [
        token
        for part in parts
        for token in ([_INNER_TOKENS.get(part, part)] if _INNER_SPLIT.fullmatch(part) else _split_chunk(part, ""))
    ]


def _split_chunk(chunk: str, next_chunk: str) -> list[str]:
    """PTB tokens (original case) of one whitespace-free chunk; ``next_chunk`` decides sentence-final periods."""
    head: list[str] = []
    tail: list[str] = []
    while chunk:
        token, rest = _split_leading(chunk)
        if token is None:
            break
        head.append(token)
        chunk = rest
    following = " " + next_chunk
    while chunk:
        token, rest = _split_trailing(chunk, following)
        if token is None:
            break
        tail.insert(0, token)
        chunk, following = rest, token
    return head + (_split_core(chunk) if chunk else []) + tail


def _python_tokenize_one(caption: str) -> str:
    chunks = normalize_line_breaks(caption).translate(_NORMALISE).split()
    tokens: list[str] = []
    for index, chunk in enumerate(chunks):
        next_chunk = chunks[index + 1] if index + 1 < len(chunks) else ""
        tokens.extend(_split_chunk(chunk, next_chunk))
    return remove_punctuation(" ".join(token.lower() for token in tokens))


def python_tokenize(captions: Sequence[str]) -> list[str]:
    """Tokenise captions like :func:`ptb_tokenize` in pure Python (no Java); see the module docstring for the rules.

    On ordinary captions (words, hyphens, numbers, contractions, possessives, quotes, brackets, sentence punctuation)
    the output equals the jar's token for token.
    """
    return [_python_tokenize_one(caption) for caption in captions]
