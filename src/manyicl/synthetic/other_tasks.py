"""Other generation families: word operations, acronyms, a word cipher."""

from __future__ import annotations

import random

from ..tasks import Example
from .registry import _family, _Spec
from .words import _cap, _fill, _w

_SENT_PARTS = {
    "verb": _w("painted cleaned found moved sold carried fixed opened washed borrowed"),
    "adj": _w("old small red heavy broken new wooden shiny"),
    "noun": _w("fence chair door bike lamp table box boat kettle ladder"),
    "tail": _w(",,yesterday,near the lake,after lunch,in the garden,on Sunday,before dinner"),
}
_WORD_OPS = {
    "reverse": lambda ws: ws[::-1],
    "sort": lambda ws: sorted(ws, key=lambda w: (w.lower(), w)),
    "swap ends": lambda ws: [ws[-1]] + ws[1:-1] + [ws[0]],
    "rotate": lambda ws: ws[1:] + ws[:1],
}


@_family("other", False, "a sentence|rewrite it|Sentence: |Answer:")
def _word_order(rng: random.Random) -> _Spec:
    """A hidden word-order operation (reverse, sort, swap first and last, rotate)."""
    op = rng.choice(list(_WORD_OPS))

    def gen(r: random.Random, k: int | None) -> Example:
        text = _fill(r, "{name} {verb} the {adj} {noun} {tail}", **_SENT_PARTS).strip()
        return Example(text, " ".join(_WORD_OPS[op](text.split())))

    return _Spec(gen, f"word operation {op}")


_ORG_PARTS = {
    "adj": _w("National Royal Global Central Northern Independent Modern United Coastal Regional"),
    "noun": _w("Museum Institute Society Council League Academy Bureau Agency Center Foundation"),
    "field": _w(
        "Art Science Music History Education Research Sports Wildlife Technology Health Design Trade"
    ),
}
_SMALL_WORDS = {"of", "for", "and", "the"}
_ACRONYMS = {
    "all initials": lambda ws: "".join(w[0].upper() for w in ws),
    "content initials": lambda ws: "".join(w[0] for w in ws if w.lower() not in _SMALL_WORDS),
    "dotted initials": lambda ws: "".join(w[0] + "." for w in ws if w.lower() not in _SMALL_WORDS),
    "lowercase initials": lambda ws: "".join(w[0].lower() for w in ws if w.lower() not in _SMALL_WORDS),
}
_ORG_FORMS = (
    "{adj} {noun} of {field}",
    "{adj} {noun} for {field} and {field2}",
    "the {adj} {noun} of {field} and {field2}",
    "{adj} {adj2} {noun} for {field}",
    "{noun} of {adj} {field}",
)


@_family("other", False, "the name of an organization|abbreviate it|Name: |Answer:")
def _acronym(rng: random.Random) -> _Spec:
    """An organisation name -> its abbreviation in a hidden style (which words, case, dots)."""
    style = rng.choice(list(_ACRONYMS))

    def gen(r: random.Random, k: int | None) -> Example:
        text = _cap(_fill(r, r.choice(_ORG_FORMS), **_ORG_PARTS))
        return Example(text, _ACRONYMS[style](text.split()))

    return _Spec(gen, style)


CIPHER_VOCAB = {
    "det": _w("the my your"),
    "adj": _w("big small red old new happy quiet dark"),
    "noun": _w("dog cat house tree river bird car book girl boy horse song"),
    "vt": _w("sees likes finds takes wants paints"),
    "vi": _w("sleeps runs sings falls"),
}
_CIPHER_FORMS = ("det noun vi", "det adj noun vi", "det noun vt det noun", "det adj noun vt det noun",
                 "det noun vt det adj noun", "det adj noun vt det adj noun")  # fmt: skip


def _pseudo_words(rng: random.Random, n: int, avoid: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        word = "".join(
            rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(rng.choice([2, 2, 3]))
        )
        if rng.random() < 0.3:
            word += rng.choice("lnrs")
        if word not in avoid and word not in out:
            out.append(word)
    return out


@_family("other", True, "a short English phrase|translate it|English: |Translation:")
def _word_cipher(rng: random.Random) -> _Spec:
    """Word-by-word translation into an invented language with an instance-specific lexicon."""
    english = [w for ws in CIPHER_VOCAB.values() for w in ws]
    lexicon = dict(zip(english, _pseudo_words(rng, len(english), set(english))))

    def gen(r: random.Random, k: int | None) -> Example:
        words: list[str] = []
        for slot in r.choice(_CIPHER_FORMS).split():
            words.append(r.choice([w for w in CIPHER_VOCAB[slot] if slot == "det" or w not in words]))
        return Example(" ".join(words), " ".join(lexicon[w] for w in words))

    sample = ", ".join(f"{e}={lexicon[e]}" for e in english[:4])
    return _Spec(gen, f"lexicon {sample}, ...")
