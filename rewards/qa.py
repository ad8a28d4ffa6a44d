"""Question-answering rewards: multiple choice (`mc_accuracy`) and short answers (`qa_exact_match`, `qa_f1`).

Multiple choice accepts the ways people and models actually answer: `B`, `(B)`, `B.`, `**B**`, `Answer: B`,
`The answer is b`, or the option's own text, read whole as a person reads it (all its sentences, with or without
a letter or a lead-in, whatever the case, spacing and punctuation; a copy cut short or slightly changed counts
for the closest option only when no other option is nearly as close); an answer naming two options (`A or C`)
counts as no answer. Short answers are compared after SQuAD's normalisation (lower case, no punctuation, no
articles, single spaces).
"""

import difflib
import json
import re
import string
from collections import Counter
from typing import Any

from ._common import as_text, batch_size, column, completion_text, report, safe_item, with_extract
from .metrics import count_failure

_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_CUE = re.compile(  # whole words: "(optional)" in an option is no cue
    r"(?:(?:correct|final|right|best)\s+)?(?<![A-Za-z])(?:answer|option|choice)(?![A-Za-z])"
    r"(?:\s+(?:is|would\s+be|should\s+be))?\s*[:=\-]?\s*",
    re.IGNORECASE,
)
_DECORATION = " \t\n*_`'\"()[]{}.:,;!"
_STANDALONE = re.compile(r"(?<![A-Za-z0-9])\(?([A-Za-z])\)?(?![A-Za-z0-9])")
_JOINERS = {"and", "or", "&", "/", ",", "nor", "both", "either"}


def _letters(options: Any, gold: Any = None) -> str:
    """Letters that name an option: one per option; when the options are unknown, A-D, or up to a later gold.

    Without the options the range is a guess, and a wide one reads too much as a choice (`I think ...`).
    """
    if isinstance(options, (list, tuple)) and 0 < len(options) <= 26:
        return string.ascii_uppercase[: len(options)]
    gold_text = (as_text(gold) or "").strip().strip("().").strip().upper()
    if len(gold_text) == 1 and gold_text in string.ascii_uppercase[:10]:
        return string.ascii_uppercase[: max(4, string.ascii_uppercase.index(gold_text) + 1)]
    return string.ascii_uppercase[:10]


def _is_pronoun_i(span: str, match: re.Match) -> bool:
    """`I` followed by a lower-case word or a contraction (`I think`, `I'd`) is the pronoun, not option I."""
    return match.group(0) == "I" and re.match(r"\s+[a-z]|['\u2019][a-z]", span[match.end():]) is not None


def _option_texts(options: Any) -> list[str]:
    if not isinstance(options, (list, tuple)):
        return []
    return [as_text(o) or "" for o in options]


def _answer_region(text: str) -> str:
    """The part of a completion that holds its answer: the last `<answer>` span, else everything."""
    tagged = _ANSWER_TAG.findall(text)
    return tagged[-1] if tagged and tagged[-1].strip() else text


def _letters_in(span: str, allowed: str, strict_case: bool) -> list[str]:
    """Option letters written as stand-alone tokens in `span`, in order.

    With `strict_case`, a lower-case letter only counts when bracketed or alone, so "a dog" is not option A.
    """
    found = []
    for match in _STANDALONE.finditer(span):
        letter = match.group(1)
        bracketed = match.group(0).startswith("(")
        if letter.islower() and strict_case and not bracketed:
            continue
        if _is_pronoun_i(span, match):
            continue
        if letter.upper() in allowed:
            found.append(letter.upper())
    return found


def _short_letter(span: str, allowed: str) -> str | None:
    """A span that is only letters and decoration (`**B**`, `(b).`, `A or C`): its single letter, else `None`."""
    core = span.strip(_DECORATION)
    core = re.sub(r"^(?:answer|option|choice)\s*[:=\-]?\s*", "", core, flags=re.IGNORECASE).strip(_DECORATION)
    if not core or len(core) > 40:
        return None
    words = [w for w in re.split(r"[\s,/&]+|[()\[\]*.:]+", core) if w]
    if not words or any(len(w) > 1 and w.lower() not in _JOINERS for w in words):
        return None
    letters = {w.upper() for w in words if len(w) == 1 and w.lower() not in _JOINERS}
    if len(letters) != 1:
        return ""  # two options named: an answer, but not a valid one
    letter = letters.pop()
    return letter if letter in allowed else None


def _by_option_text(span: str, options: list[str]) -> str | None:
    """The letter of the one option whose text `span` is (or contains); `None` if none or several."""
    norm_span = normalize_answer(span)
    if not norm_span:
        return None
    norms = [normalize_answer(o) for o in options]
    for i, norm in enumerate(norms):
        if norm and norm == norm_span:
            return string.ascii_uppercase[i]
    hits = [i for i, norm in enumerate(norms) if norm and re.search(rf"(?<!\w){re.escape(norm)}(?!\w)", norm_span)]
    # "hot dog" contains "dog": keep only options that are not part of another hit.
    hits = [i for i in hits if not any(j != i and norms[i] in norms[j] for j in hits)]
    return string.ascii_uppercase[hits[0]] if len(hits) == 1 else None


# A letter written as an option's label before its text: `B. `, `(B) `, `B) `, `B: `, `**B.** `.
_LABEL = re.compile(r"\s*[*_]*[(\[]?([A-Za-z])(?:[)\]]|[.:])[*_]*\s+")


def _whole_option(span: str, allowed: str, options: list[str]) -> str | None:
    """The letter of the one option whose whole text `span` is, with or without its letter (`B. `) in front, up
    to case, spacing and punctuation; `""` when the letter in front names another option."""
    if len(span) > 2 * max(map(len, options)) + 100:  # far longer than any option: not one copied whole
        return None
    label = _LABEL.match(span)
    for letter, text in [(None, span), *([(label.group(1).upper(), span[label.end():])] if label else [])]:
        norm = normalize_answer(text)
        hits = [i for i, option in enumerate(options) if norm and normalize_answer(option) == norm]
        if len(hits) == 1:  # two options with one text cannot be told apart
            found = string.ascii_uppercase[hits[0]]
            return found if letter in (None, found) or letter not in allowed else ""
    return None


def _closest_option(span: str, options: list[str]) -> str | None:
    """The option a long answer is a near copy of (cut short, a word changed), when no other option comes close:
    the start of one option's text only, an answer mostly made of one option's whole text, or one whose
    similarity to it is high and clearly higher than to any other."""
    label = _LABEL.match(span)
    norm = normalize_answer(span[label.end():] if label else span)
    norms = [normalize_answer(option) for option in options]
    if len(norm) < 12 or len(norm) > 2 * max(map(len, norms)) + 40:  # too short to tell, or an essay
        return None
    begun = [i for i, n in enumerate(norms) if n.startswith(norm)]  # a copy the generation budget cut short
    if begun:
        return string.ascii_uppercase[begun[0]] if len(begun) == 1 else None
    inside = [i for i, n in enumerate(norms) if n and 2 * len(n) >= len(norm) and re.search(
        rf"(?<!\w){re.escape(n)}(?!\w)", norm)]
    inside = [i for i in inside if not any(j != i and norms[i] in norms[j] for j in inside)]
    if len(inside) == 1:
        return string.ascii_uppercase[inside[0]]
    ratios = sorted(((_similarity(norm, n), i) for i, n in enumerate(norms) if n), reverse=True)
    if ratios and ratios[0][0] >= 0.8 and (len(ratios) == 1 or ratios[0][0] - ratios[1][0] >= 0.1):
        return string.ascii_uppercase[ratios[0][1]]
    return None


def _similarity(a: str, b: str) -> float:
    """How alike two normalised texts are, word by word (`difflib`'s ratio over words: cheap, and one changed word
    in twenty leaves 0.95)."""
    return difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()


def _from_span(span: str, allowed: str, options: list[str]) -> str | None:
    """Letter stated in one candidate span; `""` when it names several options."""
    short = _short_letter(span, allowed)
    if short is not None:
        return short
    sentence = re.split(r"(?<=[.!?])\s|\n", span.strip(), maxsplit=1)[0]
    # An option's own text before its letters: "A bowl of water." is option B's text, not a choice of A.
    for piece in dict.fromkeys([span, span.strip().split("\n", 1)[0], sentence]) if options else ():
        whole = _whole_option(piece, allowed, options)
        if whole is not None:
            return whole
    letters = set(_letters_in(sentence[:200], allowed, strict_case=True))
    if len(letters) > 1:
        return ""
    lead = re.match(r"\s*\**\(?([A-Z])(?:\)|\.|:|\*\*)", sentence)
    if letters and (lead or len(sentence) < 60):
        return letters.pop()
    return _by_option_text(sentence, options) if options else None


def extract_choice(completion: Any, options: Any = None, gold: Any = None) -> str | None:
    """Return the option letter a completion chose (`"B"`), or `None` if it chose none or several.

    Args:
        completion (`str` or conversation):
            The model's output.
        options (`list[str]`, *optional*):
            Option texts in letter order; they fix the valid letters and let the option text count as its letter.
        gold (`str`, *optional*):
            The gold letter; without options it widens the valid letters past A-D when it is later.
    """
    allowed = _letters(options, gold)
    texts = _option_texts(options)
    region = _answer_region(completion_text(completion)).strip()
    if not region:
        return None
    # What follows the last three answer cues, the last first (slicing after every cue of a long text is quadratic).
    tails = [region[end:] for end in reversed([m.end() for m in _CUE.finditer(region)][-3:])]
    lines = [line for line in region.splitlines() if line.strip()]
    if texts:  # an option copied whole, however long, perhaps after "The answer is" or its letter, or on a line
        for span in [region, *tails, *lines[:1], *lines[-1:]]:
            whole = _whole_option(span, allowed, texts)
            if whole is not None:
                return whole or None
    spans = [region] if len(region) <= 80 else []
    spans += tails
    spans += [lines[0], lines[-1]] if lines else []
    for span in spans:
        letter = _from_span(span, allowed, texts)
        if letter == "":
            return None
        if letter:
            return letter
    for span in [region, *tails] if texts else []:
        closest = _closest_option(span, texts)
        if closest:
            return closest
    return None


def _gold_letter(gold: Any, options: Any) -> str | None:
    text = (as_text(gold) or "").strip().strip("().").strip()
    if len(text) == 1 and text.upper() in _letters(options):
        return text.upper()
    texts = _option_texts(options)
    return _by_option_text(text, texts) if texts and text else None


def score_choice(completion: Any, gold_letter: Any, options: Any = None) -> float | None:
    """Score one multiple-choice answer: `1.0` right, `0.0` wrong or unreadable, `None` if the gold is unusable."""
    gold = _gold_letter(gold_letter, options)
    if gold is None:
        count_failure("mc_accuracy/gold")
        return None
    choice = extract_choice(completion, options, gold)
    if choice is None:
        count_failure("mc_accuracy")
        return 0.0
    return float(choice == gold)


def mc_accuracy(prompts: Any, completions: Any, gold: Any = None, options: Any = None, **kwargs: Any):
    """Multiple-choice reward: `1.0` when the chosen letter (or option text) is the gold letter.

    Args:
        prompts (`list`):
            Unused; part of TRL's reward signature.
        completions (`list[str]` or `list[list[dict]]`):
            Plain-text or conversational completions.
        gold (`list[str]`):
            Gold letters (`"B"`).
        options (`list[list[str]]`, *optional*):
            Option texts per row, in letter order.

    Returns:
        `list[float | None]`: `None` for rows whose gold is not a valid letter.
    """
    n = batch_size(completions)
    completions = completions if isinstance(completions, (list, tuple)) else [completions]
    golds, opts = column(gold, n), _options_column(options, n)
    scores = [safe_item("mc_accuracy", score_choice, c, g, o) for c, g, o in zip(completions, golds, opts)]
    unread = sum(1 for c, g, o in zip(completions, golds, opts) if mc_accuracy.extract(c, gold=g, options=o) is None)
    report(kwargs, "mc_accuracy", scores, unread)
    return scores


with_extract(mc_accuracy, lambda completion, options=None, gold=None, **row: extract_choice(completion, options, gold))


def _options_column(options: Any, n: int) -> list:
    # A single list of strings is one row's options shared by all rows, not a column.
    if isinstance(options, (list, tuple)) and options and all(isinstance(o, str) for o in options):
        return [list(options)] * n
    return column(options, n)


# ------------------------------------------------------------------------------------------------------------
# Short-answer QA
# ------------------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: Any) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = (as_text(text) or "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def gold_answers(gold: Any) -> list[str]:
    """Acceptable answers from a gold cell: a string, a JSON list of strings, or a list."""
    if isinstance(gold, (list, tuple)):
        return [a for a in (as_text(g) for g in gold) if a and a.strip()]
    text = as_text(gold)
    if not text or not text.strip():
        return []
    if text.lstrip().startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return gold_answers(parsed)
    return [text]


def extract_short_answer(completion: Any) -> str:
    """The answer part of a short-answer completion: `<answer>` span, else after an answer cue, else last line."""
    region = _answer_region(completion_text(completion)).strip()
    cues = list(re.finditer(r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:)\s*", region, re.IGNORECASE))
    if cues:
        rest = region[cues[-1].end() :]
        return re.split(r"\n|(?<=[^\d\s])\.(?:\s|$)", rest, maxsplit=1)[0].strip(" *$")
    lines = [line for line in region.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _f1(prediction: str, gold: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def score_exact_match(completion: Any, gold: Any) -> float | None:
    """`1.0` if the normalised answer equals any normalised gold answer; `None` without a gold."""
    answers = gold_answers(gold)
    if not answers:
        count_failure("qa_exact_match/gold")
        return None
    prediction = normalize_answer(extract_short_answer(completion))
    if not prediction:
        count_failure("qa_exact_match")
        return 0.0
    return float(any(prediction == normalize_answer(a) for a in answers))


def score_f1(completion: Any, gold: Any) -> float | None:
    """Best token F1 between the answer and any gold answer; `None` without a gold."""
    answers = gold_answers(gold)
    if not answers:
        count_failure("qa_f1/gold")
        return None
    prediction = extract_short_answer(completion)
    if not normalize_answer(prediction):
        count_failure("qa_f1")
        return 0.0
    return max(_f1(prediction, a) for a in answers)


def _qa_batch(name: str, scorer, completions: Any, gold: Any, kwargs: dict) -> list[float | None]:
    n = batch_size(completions)
    completions = completions if isinstance(completions, (list, tuple)) else [completions]
    scores = [safe_item(name, scorer, c, g) for c, g in zip(completions, column(gold, n))]
    # Unparsed: no answer to read (`_short_answer`), not a wrong one.
    unparsed = sum(1 for c, s in zip(completions, scores) if s is not None and _short_answer(c) is None)
    report(kwargs, name, scores, unparsed)
    return scores


def qa_exact_match(prompts: Any, completions: Any, gold: Any = None, **kwargs: Any) -> list[float | None]:
    """Short-answer exact match after SQuAD normalisation; `gold` is an answer or a JSON list of answers."""
    return _qa_batch("qa_exact_match", score_exact_match, completions, gold, kwargs)


def qa_f1(prompts: Any, completions: Any, gold: Any = None, **kwargs: Any) -> list[float | None]:
    """Short-answer token F1 (SQuAD); `gold` is an answer or a JSON list of answers."""
    return _qa_batch("qa_f1", score_f1, completions, gold, kwargs)


def _short_answer(completion: Any, **row: Any) -> str | None:
    """The short answer as written, `None` when nothing of it is left after normalisation (scored unparsed)."""
    answer = extract_short_answer(completion)
    return answer if normalize_answer(answer) else None


with_extract(qa_exact_match, _short_answer)
with_extract(qa_f1, _short_answer)
