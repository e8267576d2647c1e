"""Built-in local content-filter detector: curated rules, pure Python, no dependencies.

How it works (all patterns are compiled once, at import):

1. ``normalize()`` maps the text to a canonical *view*: NFKC + casefold, zero-width and
   combining marks (diacritics) removed, common Cyrillic/Greek homoglyphs mapped to Latin,
   leetspeak mapped (``0→o 1→i 3→e 4→a 5→s 7→t @→a $→s``, ``!`` between letters → ``i``),
   apostrophes and ``*`` deleted (``don't→dont``, ``f*ck→fck``), every other non-alphanumeric
   character turned into a space, whitespace collapsed, spaced-out letters joined
   (``k i l l``/``k.i.l.l`` → ``kill``) and stretched letters reduced (``fuuuuck`` → ``fuck``).
   The view is padded with a space at each end, so *a word boundary is a literal space* and
   every rule regex can start with a literal (which ``re`` searches for very quickly).
2. Gating: the set of tokens of the view is intersected with the set of anchor words of
   all rules; only rules whose anchors occur are run (benign texts usually run none).
3. Each rule is ``(category, severity, anchors, regex, require=(), unless=None)``; a rule
   fires if its regex matches, its ``require`` regexes (if any) also match somewhere and its
   ``unless`` regex (if any) does not. Benign look-alikes are handled by writing rules as
   phrases with explicit objects ("kill you", not "kill") and by ``unless`` context.
4. Speed: Python's ``re`` tries every alternative at every position, so big alternations are
   slow. Word lists are compiled as tries (``alt``); a rule whose every match provably starts
   with one of its anchor words (checked at import by walking the parsed regex, see
   ``_first_words``) is "leading" and is only tried with ``match`` at that anchor's
   occurrences; on long views the other rules are searched only in a window around each
   anchor occurrence. Cost is then proportional to anchor occurrences, not text length.

Thread safety: the detector holds only immutable compiled data; ``score`` keeps no state.
"""

from __future__ import annotations

import codecs
import itertools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from apps.moderation.detectors.base import CATEGORIES_SEVERITY, SAFE, SEVERITY_RANK, Scores

# --------------------------------------------------------------------------- normalisation

_HOMOGLYPHS = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j",
    "ѕ": "s", "ԁ": "d", "ɡ": "g", "ո": "n", "ս": "u",
    # Greek
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ς": "s", "σ": "s",
    # Latin letters that NFKD does not decompose
    "ø": "o", "ł": "l", "đ": "d", "ð": "d",
}  # fmt: skip
_HOMOGLYPHS.update({k.upper(): v for k, v in list(_HOMOGLYPHS.items()) if len(k.upper()) == 1})
_MULTI_LETTER = {"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss", "ẞ": "ss"}
# Non-ASCII punctuation that separates words (everything else non-ASCII is dropped, which
# removes the combining marks NFKD splits off, zero-width characters and curly apostrophes).
_WORD_BREAKS = (
    "\u2010\u2011\u2012\u2013\u2014\u2015\u2026\u00ab\u00bb\u201c\u201d\u201e\u2022\u00b7"
    "\u00bf\u00a1\u3000\u3001\u3002\uff0c\u2039\u203a\u00a7\u00b6\u2192\u00d7"
)
# Non-ASCII text goes through one charmap encoding (C speed; str.translate and regex
# callbacks are slow on non-ASCII strings): ASCII encodes to itself, each homoglyph and
# word break to a spare byte >= 128 that a byte table then maps to its ASCII letter or a
# space, and every other character is dropped ("ignore").
_SPARE = [*_HOMOGLYPHS.items(), *((c, " ") for c in _WORD_BREAKS)]
assert len(_SPARE) <= 128
_CHARMAP = codecs.charmap_build(
    "".join(map(chr, range(128))) + "".join(c for c, _ in _SPARE) + "\ufffe" * (128 - len(_SPARE))
)
_SPARE_TABLE = bytes(range(128)) + "".join(v for _, v in _SPARE).ljust(128).encode("ascii")

_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
_ASCII_MAP: dict[int, str | None] = {ord(k): v for k, v in _LEET.items()}
_ASCII_MAP.update({ord("'"): None, ord("`"): None, ord("*"): None})
for _c in '\t\n\r\x0b\x0c!"#%&()+,-./:;<=>?[\\]^_{|}~':
    _ASCII_MAP[ord(_c)] = " "
# The same map as a byte table: bytes.translate is several times faster than str.translate.
_ASCII_TABLE = bytes.maketrans(
    bytes(k for k, v in _ASCII_MAP.items() if v is not None),
    "".join(v for v in _ASCII_MAP.values() if v is not None).encode("ascii"),
)
_ASCII_DELETE = bytes(k for k, v in _ASCII_MAP.items() if v is None)
_BANG = re.compile(rb"(?<=[a-z])!+(?=[a-z])")
_SPACED_PROBE = re.compile(r" [a-z] [a-z] [a-z] ")
_SPACED = re.compile(r"(?<= )[a-z](?: [a-z]){2,}(?= )")
_TRIPLE = re.compile(r"([a-z])\1\1")
# a whole run of letters with a stretch in it (lazy, from run starts only: linear)
_STRETCHED = re.compile(r"(?<![a-z])[a-z]*?([a-z])\1\1[a-z]*")
_LONGEST_WORD = 24  # longer letter runs are no vocabulary word, stretched or not
_RUN = re.compile(r"([a-z])\1*")


def _base(text: str) -> bytes:
    """Lower-case ASCII bytes of ``text``: accents, zero-width and other scripts removed,
    homoglyphs mapped to Latin letters, non-ASCII punctuation turned into spaces."""
    if text.isascii():
        return text.encode("ascii").lower()
    t = unicodedata.normalize("NFKD", text)
    for char, letters in _MULTI_LETTER.items():
        if char in t:
            t = t.replace(char, letters)
    return codecs.charmap_encode(t, "ignore", _CHARMAP)[0].translate(_SPARE_TABLE).lower()


def _destretch(run: str, vocab: frozenset[str]) -> str:
    """``fuuuuck`` → ``fuck``; ``kiiiilll`` → ``kill``: pick a variant found in ``vocab``,
    else reduce every stretch to one letter."""
    runs = [m.group() for m in _RUN.finditer(run)]
    if len(run) <= _LONGEST_WORD * 3:
        options = [(r,) if len(r) < 3 else (r[0], r[0] * 2) for r in runs]
        for p in itertools.islice(itertools.product(*options), 64):
            if (variant := "".join(p)) in vocab:
                return variant
    return "".join(r if len(r) < 3 else r[0] for r in runs)


def _view(text: str, vocab: frozenset[str]) -> tuple[str, list[str]]:
    b = _base(text)
    if b"!" in b:
        b = _BANG.sub(b"i", b)
    toks = b.translate(_ASCII_TABLE, _ASCII_DELETE).decode("ascii").split()
    v = " " + " ".join(toks) + " "
    if _SPACED_PROBE.search(v):
        v = _SPACED.sub(lambda m: m.group().replace(" ", ""), v)
        toks = v.split()
    stretched = _stretched_tokens(v, toks)
    if stretched:
        fixed = {t: _STRETCHED.sub(lambda m: _destretch(m.group(), vocab), t) for t in stretched}
        toks = [fixed.get(t, t) for t in toks]
        v = " " + " ".join(toks) + " "
    return v, toks


def normalize(text: str, vocab: frozenset[str] = frozenset()) -> str:
    """Canonical view of ``text``: lower-case ASCII-ish words separated by single spaces,
    with a leading and trailing space. See the module docstring."""
    return _view(text, vocab)[0]


def _has_byte_run(data: bytes) -> bool:
    """Is any byte repeated three times in a row? Exact, in a few big-integer operations:
    with ``x`` the bytes as one integer, ``d = x ^ (x >> 8)`` has a zero byte where two
    neighbours are equal, ``e = d | (d >> 8)`` where three are, and the classic
    has-a-zero-byte test finds one (the last byte, a space, keeps ``e`` above ``ones``)."""
    x = int.from_bytes(data, "little")
    d = x ^ (x >> 8)
    e = d | (d >> 8)
    ones = int.from_bytes(b"\x01" * len(data), "little")
    return ((e - ones) & ~e & (ones << 7)) != 0


def _stretched_tokens(v: str, toks: list[str]) -> set[str]:
    """The tokens with a letter repeated 3+ times. The byte probe rules out almost every
    long text at once; digits (``2000``) or other repeated bytes then get the exact search
    (on unique tokens for long texts, which repeat words). Linear: each token is looked
    at once, however long it is."""
    if len(v) > 256:
        if not _has_byte_run(v.encode("ascii")):
            return set()
        if len(v) > 768:
            v = " " + " ".join(set(toks)) + " "
    found: set[str] = set()
    pos = 0
    while (m := _TRIPLE.search(v, pos)) is not None:
        pos = v.find(" ", m.end())
        found.add(v[v.rfind(" ", 0, m.start()) + 1 : pos])
    return found


# --------------------------------------------------------------------------- rule language

_SUFFIXES = ("", "s", "es", "ed", "d", "ing", "in", "er", "ers")


def _words(spec: str) -> set[str]:
    """``"kill* stab bomb"`` → words; a trailing ``*`` adds common inflections."""
    out: set[str] = set()
    for w in spec.split():
        if w.endswith("*"):
            stem = w[:-1]
            if stem.endswith("e"):
                out.update(stem + s for s in ("", "s", "d", "r", "rs"))
                out.update(stem[:-1] + s for s in ("ing", "in"))
                continue
            out.update(stem + s for s in _SUFFIXES)
            if len(stem) > 2 and stem[-1] not in "aeiouwxy" and stem[-2] in "aeiou":
                out.update(stem + stem[-1] + s for s in ("ing", "ed", "er", "ers"))
        else:
            out.add(w)
    return out


def _trie_regex(words: Iterable[str]) -> str:
    """Alternation of literal ``words`` shaped as a trie (``kill|killed`` → ``kill(?:ed)?``):
    ``re`` then dispatches on one character per level instead of trying every word."""
    trie: dict = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        end = "" in node
        branches = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if end:
            return body + "?" if len(branches) == 1 and len(body) == 1 else "(?:" + body + ")?"
        return body

    return "(?:" + emit(trie) + ")"


def alt(spec: str) -> str:
    """Regex alternation (non-capturing, trie-shaped) of the words in ``spec``
    (``*`` = inflections). Words are matched greedily; callers add the ``(?= )`` boundary."""
    return _trie_regex(_words(spec))


GAP = r"(?: [a-z0-9]+){0,%d}"


def gap(n: int) -> str:
    """Up to ``n`` arbitrary words between two parts of a phrase."""
    return GAP % n


@dataclass(frozen=True, slots=True)
class Rule:
    category: str
    severity: str  # "low" | "medium" | "high"; for detected-categories any non-safe value
    anchors: frozenset[str]
    rx: re.Pattern[str]
    require: tuple[re.Pattern[str], ...] = ()  # each must match somewhere
    unless: re.Pattern[str] | None = None
    # True when every match of rx provably starts with " <anchor>": then rx is only tried
    # (``match``) at the anchors' occurrences instead of searched.
    leading: bool = False

    def fires(self, view: str, spans: list[tuple[int, int]] | None = None) -> bool:
        """Does the rule fire on ``view``? ``spans``: only look for ``rx`` there — at each
        span's start for leading rules, in the whole span otherwise (``require``/``unless``
        always look at the whole view)."""
        if spans is None:
            if self.rx.search(view) is None:
                return False
        elif self.leading:
            match = self.rx.match
            for lo, _hi in spans:
                if match(view, lo) is not None:
                    break
            else:
                return False
        else:
            search = self.rx.search
            end = -1
            for lo, hi in sorted(spans):
                if hi <= end:
                    continue
                if search(view, max(lo, end - _BACK), hi) is not None:
                    break
                end = hi
            else:
                return False
        return self.holds(view)

    def holds(self, view: str) -> bool:
        """Do ``require`` and ``unless`` allow the rule to fire on ``view``?"""
        for required in self.require:
            if required.search(view) is None:
                return False
        return self.unless is None or self.unless.search(view) is None


def _c(p: str | None) -> re.Pattern[str] | None:
    return None if p is None else re.compile(p)


_RULES: list[Rule] = []


def R(
    category: str,
    severity: str,
    anchors: str,
    rx: str,
    require: str | tuple[str, ...] = (),
    unless: str | None = None,
    leading: bool | None = None,
) -> None:
    """Register a rule. ``anchors``: words (``*`` = inflections) of which at least one must be
    a token of the view for the rule to run. ``rx``: searched in the view; must start and end
    on word boundaries (the view is ``" w1 w2 ... wn "``) — a trailing ``(?= )`` is added."""
    anchor_set = frozenset(_words(anchors))
    compiled = re.compile("(?:" + rx + ")(?= )")
    first = _first_words(compiled.pattern)
    if leading is None:
        leading = first is not None and all(w[:1] == " " and w[1:] in anchor_set for w in first)
    if not leading and first is not None and len(first) <= 200:
        # every match starts with one of these words: if they are specific enough, gate on
        # them instead and try the rule only where they occur
        words = {w[1:] for w in first}
        if all(w and w not in _STOPWORDS for w in words):
            anchor_set, leading = frozenset(words), True
    required = tuple(re.compile(p) for p in ((require,) if isinstance(require, str) else require))
    _RULES.append(Rule(category, severity, anchor_set, compiled, required, _c(unless), leading))


_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "im",
        "ive",
        "ill",
        "id",
        "you",
        "youre",
        "your",
        "ur",
        "u",
        "my",
        "me",
        "we",
        "us",
        "he",
        "she",
        "it",
        "its",
        "they",
        "them",
        "his",
        "her",
        "our",
        "their",
        "this",
        "that",
        "these",
        "those",
        "to",
        "of",
        "in",
        "on",
        "for",
        "with",
        "as",
        "at",
        "by",
        "from",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "dont",
        "not",
        "no",
        "can",
        "cant",
        "cannot",
        "will",
        "wont",
        "would",
        "should",
        "could",
        "how",
        "what",
        "why",
        "who",
        "where",
        "when",
        "which",
        "best",
        "let",
        "lets",
        "now",
        "and",
        "or",
        "if",
        "so",
        "just",
        "very",
        "really",
        "all",
        "any",
        "some",
        "go",
        "get",
        "got",
        "make",
        "made",
        "want",
        "wanna",
        "gonna",
        "going",
        "take",
        "please",
        "tell",
        "give",
        "write",
        "one",
        "new",
    ]
)


def _first_words(pattern: str, limit: int = 20000) -> set[str] | None:
    """The possible starts (``" word"``) of a match of ``pattern``, or None when they cannot
    be enumerated (character classes, unbounded repeats, too many)."""
    from re import _constants as C  # noqa: N812
    from re import _parser

    def seq(items, starts: set[tuple[str, bool]]) -> set[tuple[str, bool]] | None:
        for op, av in items:
            new: set[tuple[str, bool]] = set()
            for s, done in starts:
                if done:
                    new.add((s, True))
                    continue
                if op is C.LITERAL:
                    ch = chr(av)
                    new.add((s + ch, False) if ch != " " or s == "" else (s, True))
                elif op is C.SUBPATTERN:
                    sub = seq(av[3], {(s, False)})
                    if sub is None:
                        return None
                    new |= sub
                elif op is C.BRANCH:
                    for branch in av[1]:
                        sub = seq(branch, {(s, False)})
                        if sub is None:
                            return None
                        new |= sub
                elif op in (C.MAX_REPEAT, C.MIN_REPEAT) and av[0] == 0 and av[1] == 1:
                    sub = seq(av[2], {(s, False)})
                    if sub is None:
                        return None
                    new |= sub | {(s, False)}
                elif op is C.IN and all(o is C.LITERAL for o, _ in av):
                    new |= {(s + chr(c), False) for _, c in av if chr(c) != " "}
                    if any(chr(c) == " " for _, c in av):
                        return None
                elif (
                    op in (C.MAX_REPEAT, C.MIN_REPEAT)
                    and s.strip()
                    and av[2]
                    and av[2][0] == (C.LITERAL, 32)
                ):
                    new.add((s, True))  # a gap of words after a complete first word
                elif op is C.ASSERT and s.strip():
                    new.add((s, True))  # a lookaround after a word: the word is complete
                else:
                    return None
            starts = new
            if len(starts) > limit:
                return None
        return starts

    result = seq(_parser.parse(pattern), {("", False)})
    return None if result is None else {s for s, _ in result}


def W(category: str, severity: str, words: str, unless: str | None = None) -> None:
    """Register a plain word-list rule: any of ``words`` as a whole token fires it."""
    ws = _words(words)
    R(category, severity, " ".join(ws), " " + alt(" ".join(ws)), unless=unless)


# --------------------------------------------------------------------------- vocabulary

PRON = alt("you u ya him her them yourself everyone everybody someone somebody people")
KIN = alt(
    "wife husband boss brother sister mother father mom mum dad ex girlfriend boyfriend "
    "neighbour neighbor neighbours neighbors teacher teachers kids child children family "
    "coworker coworkers colleague classmate classmates president senator guy man woman "
    "baby son daughter friend roommate cop cops police officer judge"
)
# a person as the object of a verb (optionally one adjective before a kin noun)
PERSON = (
    rf"(?:{PRON}|(?:(?:my|the|his|her|your|that|this|a|some|those|these|all|our) )"
    rf"(?:[a-z]+ )?{KIN}|a (?:person|human)|people|humans|kids|children|women|men)"
)

GROUPS_EN = (
    "immigrants immigrant migrants refugees jews jew jewish muslims muslim islam blacks "
    "gays gay homosexuals homosexual lesbians lesbian trans transgender transgenders women "
    "asians asian mexicans mexican arabs arab gypsies gypsy roma christians indians africans "
    "chinese hispanics latinos foreigners disabled negroes whites homosexuality lgbt queers "
    "indian black white brown jewish"
)
GROUP = (
    r"(?:the )?(?:(?:black|white|brown|jewish|muslim|gay|trans|asian|indian|arab|mexican|african"
    r"|chinese|disabled) (?:people|race|men|women|folks|community|persons)|"
    + alt(GROUPS_EN.replace(" indian black white brown jewish", ""))
    + r"(?: people| folks| men| women| race)?)"
)
DEHUMANIZE = alt(
    "vermin parasites parasite plague disease cockroaches cockroach rats animals subhuman "
    "subhumans savages savage inferior scum filth degenerates degenerate freaks freak "
    "abomination abominations terrorists criminals rapists thieves lazy stupid dumb "
    "disgusting burden burdens mentally useless retarded evil invaders apes monkeys "
    "brainwashed idiots greedy dirty"
)[:-1] + (
    r"|(?:less|not as) (?:intelligent|human|evolved|civilized)|genetically (?:inferior|stupid)"
    r"|(?:should|must|need to|deserve to) (?:die|be (?:banned|deported|cured|locked (?:up|away)"
    r"|shot|killed|gassed|sterilized|exterminated))|(?:will|should) burn(?: in hell)?"
    r"|deserve to die)"
)

# --------------------------------------------------------------------------- hate

W("hate", "high",
  "nigger niggers niggah nigga niggas negroes faggot faggots fag fags faggit kike kikes "
  "chink chinks spic spics spick wetback wetbacks tranny trannies gook gooks raghead "
  "ragheads towelhead towelheads sandnigger coons beaner beaners untermensch untermenschen "
  "zipperhead kyke kykes shylock gyppo gyppos pikey pikeys maricones sudaca sudacas "
  "bougnoule bougnoules")  # fmt: skip
W("hate", "medium", "retard retards retarded dyke dykes paki pakis coon tard tards spaz")
W("hate", "low", "maricon")
R("hate", "high", GROUPS_EN, " " + GROUP + r"(?: [a-z]+){0,8} " + DEHUMANIZE,
  unless=r" (?:stereotypes?|myths?|misconceptions?|claims?|history of|why do some people"
         r"|is it true|debunk\w*|propaganda about)(?= )")  # fmt: skip
R(
    "hate",
    "high",
    "race races religion gender",
    r" " + DEHUMANIZE + r" (?:race|races|religion|gender)",
)
R(
    "hate",
    "high",
    "superiority supremacy supremacist supremacists master race",
    r" (?:(?:superiority|supremacy) of the (?:white|black|aryan) (?:race|man)"
    r"|white (?:supremacy|supremacist|supremacists|power|race)|master race|aryan race)",
)
R("hate", "high", "hitler", r" hitler (?:was|is) right")
R("hate", "high", "holocaust", r" holocaust (?:never happened|(?:is|was) (?:a )?(?:lie|hoax|myth))")
R(
    "hate",
    "high",
    "slurs slur insults insult names",
    r" (?:slurs?|insults?|offensive names|names) (?:i can use |to use )?(?:for|against|about|to call)"
    r"(?: [a-z]+)? " + GROUP,
)
R(
    "hate",
    "medium",
    "racist sexist homophobic antisemitic",
    r" (?:racist|sexist|homophobic|antisemitic) (?:joke|jokes|rant|slur|slurs|insult|insults|meme|memes|poem|song)",
)
R(
    "hate",
    "medium",
    "joke jokes",
    r" jokes? (?:about|on) (?:why )?"
    + GROUP
    + r"(?: [a-z]+){0,4} "
    + alt("inferior greedy stupid dumb lazy being retards criminals terrorists smell dirty"),
)
R("hate", "high", "kitchen", r" (?:women|woman|girls) (?:belong|should stay|stay) in the kitchen")
R(
    "hate",
    "high",
    "should deserve",
    r" "
    + GROUP
    + r" (?:should not|shouldnt|dont deserve to|do not deserve to) (?:exist|live|vote|be allowed)",
)
R(
    "hate",
    "high",
    "gas exterminate exterminated purge wipe wiped eradicate deport ban",
    r" (?:gas|exterminate|eradicate|purge|wipe out|deport all|ban all|get rid of all|kill all)"
    r"(?: [a-z]+){0,5} "
    + GROUP
    + r"| (?:should be|must be|to be|be) (?:wiped out|exterminated|eradicated|gassed|purged)",
)
# Spanish / French / German
R("hate", "high", "inmigrantes judios negros musulmanes gitanos moros sudacas maricones",
  r" (?:los |las )?(?:inmigrantes|judios|negros|musulmanes|gitanos|moros|sudacas|maricones)"
  r"(?: [a-z]+){0,6} (?:plaga|parasitos|inferiores|raza inferior|animales|basura|ratas|escoria"
  r"|subhumanos|ladrones)")  # fmt: skip
R(
    "hate",
    "high",
    "juifs immigres arabes noirs musulmans etrangers",
    r" (?:les )?(?:juifs|immigres|arabes|noirs|musulmans|etrangers|migrants)(?: [a-z]+){0,6} "
    r"(?:race inferieure|inferieurs|parasites|vermine|sous hommes|animaux|rats|dechets|cafards)",
)
R(
    "hate",
    "high",
    "auslander juden fluchtlinge muslime kanaken kanake",
    r" (?:die )?(?:auslander|juden|fluchtlinge|muslime|kanaken|kanake|migranten)"
    r"(?:(?: [a-z]+){0,6} (?:ungeziefer|untermenschen|parasiten|minderwertig|abschaum|ratten)"
    r"| raus)",
)

# --------------------------------------------------------------------------- self-harm

_SELF = r"(?:myself|my self|my wrists?|my arms?|my legs?|my skin|my thighs?)"
_FIRST = r"(?:i|im|i am|ill|i will|i ll|i wanna|i want to|i need to|i have to|i should|i m)"
R(
    "self_harm",
    "high",
    "kill* end* hang* hurt* cut* poison* drown* shoot* stab* burn* starve*",
    r" (?:kill|killing|end|ending|hang|hanging|cut|cutting|poison|poisoning|drown|drowning|"
    r"shoot|shooting|stab|stabbing|slit|slitting|off) " + _SELF,
)
R(
    "self_harm",
    "high",
    "myself",
    r" myself",
    require=r" (?:kill|k1ll|kil|end|hang|off|poison)(?: [a-z]+){0,2} myself",
)
R(
    "self_harm",
    "high",
    "end ending take taking",
    r" (?:end|ending|take|taking) (?:my|my own) (?:life|own life)| end it all",
)
R(
    "self_harm",
    "high",
    "suicide suicidal suicidio suizid selbstmord",
    r" (?:commit|commiting|committing|comit) suicide| suicide (?:note|notes|method|methods|"
    r"tonight|pact|plan|today|quick|quickly|painless|attempt)| (?:methods?|ways?|best way|"
    r"easiest way|painless way) (?:of|to|for)(?: commit)? suicide| suicide methods?"
    r"| (?:thinking|think|thought) (?:about|of) (?:suicide|killing myself|ending it)",
)
R("self_harm", "high", "suicide", r" suicide(?: [a-z]+){0,3} (?:methods?|tonight|quick|painless)")
R("self_harm", "high", "suicide", r" suicide",
  require=r" (?:painless|quick|fastest|easiest|best|most) (?:way|ways|method|methods) to (?:commit )?suicide|" r" (?:most|least) painless way to (?:commit )?suicide")  # fmt: skip
R(
    "self_harm",
    "medium",
    "die dead alive live living",
    _FIRST + r"(?: just| really| honestly)? (?:want to|wanna|wish i could|going to|gonna|"
    r"deserve to|am going to) (?:die|be dead)| i wish i (?:was|were) dead|"
    r" (?:dont|do not|no longer) want to (?:live|be alive|exist)(?: anymore)?"
    r"| (?:life is not|life isnt|not) worth living",
    unless=r" die (?:my|your|her|his|the|it) (?:hair|clothes|shirt|fabric)| dying to (?:try|see)",
)
R(
    "self_harm",
    "high",
    "tonight",
    r" (?:going to|gonna|will|ill) do it tonight",
    require=r" (?:die|dead|suicide|kill myself|end it|end my life|nobody (?:cares|would miss))",
)
R(
    "self_harm",
    "high",
    "wrists wrist",
    r" (?:slit|slitting|cut|cutting|slash)(?: [a-z]+){0,2} (?:my |your |the )?wrists?",
)
R(
    "self_harm",
    "high",
    "pills overdose overdosing od",
    r" (?:how many|enough) (?:sleeping )?pills(?: [a-z]+){0,5} (?:kill me|overdose|die|not wake up"
    r"|to die|end it)| (?:overdose|od|overdosing) on (?:my|all my|the)"
    r"| (?:take|taking|swallow) all (?:my|the|of my) pills"
    r"| (?:overdose|od) (?:and|to) (?:die|not wake up|end it)",
)
R(
    "self_harm",
    "high",
    "overdose lethal",
    r" (?:overdose|lethal dose)(?: [a-z]+){0,6} (?:to die|if i want to end it|want to end it|end it"
    r"|kill me|and die|not wake up)",
)
R(
    "self_harm",
    "high",
    "jump jumping",
    r" (?:jump|jumping) (?:off|from)(?: [a-z]+){0,6} (?:and die|and end it|end it all|to die|die)",
)
R("self_harm", "high", "hang", r" (?:best way|how) to hang (?:myself|yourself)")
R("self_harm", "high", "bleed", r" bleed (?:more|out)", require=r" (?:wrists?|myself|razor|cut)")
R("self_harm", "high", "razor blade", r" (?:razor|blade)", require=r" (?:cut myself|hurt myself|"
  r"cutting myself|self harm|self harming)|(?:cut|hurt) myself")  # fmt: skip
R("self_harm", "high", "deeper", r" (?:cut|go) deeper", require=r" (?:cut|cutting|self harm)")
R("self_harm", "medium", "harm harming",
  r" self (?:harm|harming)",
  require=r" (?:i|im|my|me)(?: [a-z]+){0,4} self (?:harm|harming)|self harm(?:ing)?"
  r"(?: [a-z]+){0,4} (?:again|more|deeper|keep|scars)",
  unless=r" (?:patient|patients|triage|protocol|support (?:someone|a friend|my)|help (?:someone|a friend))")  # fmt: skip
R(
    "self_harm",
    "medium",
    "ana anorexia starve starving bulimia purge purging throw",
    r" pro (?:ana|mia)| (?:starve|starving) myself| hide my (?:anorexia|bulimia|eating disorder)"
    r"| (?:purge|purging|throw up|vomit) after (?:eating|every meal|meals)"
    r"| make myself (?:throw up|vomit|puke)| stop eating (?:completely|entirely)",
)
R("self_harm", "medium", "calories", r" (?:less than|under|below) (?:[2-9]oo|[2-9]00|soo) calories")
R(
    "self_harm",
    "medium",
    "burn hurt cut",
    r" (?:burn|hurt|cut|punish) myself"
    r"(?: [a-z]+){0,3}",
    unless=r" (?:accidentally|by accident|while cooking|cooking)",
)
R(
    "self_harm",
    "high",
    "rope noose",
    r" (?:rope|noose)(?: [a-z]+){0,2} ready| (?:tie|tying) a noose",
)
# es / fr / de
R(
    "self_harm",
    "high",
    "suicidarme matarme suicidio morir quitarme matar",
    r" (?:suicidarme|matarme|quitarme la vida|quiero morir|me quiero matar|me voy a matar"
    r"|me quiero suicidar)",
)
R(
    "self_harm",
    "high",
    "suicider tuer mourir",
    r" (?:me suicider|me tuer|je veux mourir|veux mourir|envie de mourir|me foutre en l air)",
)
R(
    "self_harm",
    "high",
    "umbringen selbstmord sterben toten suizid",
    r" (?:mich umbringen|mich toten|selbstmord begehen|will sterben|mochte sterben|mich selbst toten"
    r"|bringe mich um)",
)

# --------------------------------------------------------------------------- sexual

_MINOR = (
    r"(?:minor|minors|child|children|kid|kids|underage|preteen|preteens|schoolgirl|"
    r"schoolboy|(?:[2689]|[aest]|i[oi2eas6t]|1[0-7]) (?:year|yr)s? old|teen|teens|teenager|"
    r"teenagers|loli|lolita|student|pupil|classmate)"
)
_SEXY = r"(?:sex|sexual|sexy|erotic|erotica|porn|porno|nude|naked|explicit|nsfw|smut|horny)"
W("sexual", "high",
  "porn porno porns pornography pornographic hentai smut erotica blowjob blowjobs handjob "
  "handjobs orgasm orgasms masturbate masturbating masturbation masturbates cybersex "
  "threesome gangbang cumshot creampie deepthroat rimjob pussies cunnilingus fellatio "
  "dildo dildos xxx bukkake nudes sexgeschichte sexgeschichten pornos pornografia "
  "erotique erotico erotica versaute")  # fmt: skip
W("sexual", "medium", "horny sext sexting sexts nsfw boobs tits titties slut sluts whore whores")
R("sexual", "high", "sex sexy sexual erotic",
  r" (?:sex|sexy|sexual|erotic|explicit|dirty|nsfw) (?:scene|scenes|story|stories|fantasy|"
  r"fantasies|encounter|roleplay|role play|chat|act|acts|fanfic|fanfiction|content|video|"
  r"videos|pics|photos|images)",
  unless=r" (?:patient|patients|education|educational|health|consent|reproduction|assault"
  r" awareness|dimorphism|literature course|harassment policy)")  # fmt: skip
R(
    "sexual",
    "high",
    "sex",
    r" (?:having|have|had|has|anal|oral|graphic|explicit|rough|hardcore) sex",
)
R(
    "sexual",
    "high",
    "fuck fucking fucked fucks",
    r" (?:fuck|fucks|fucking|fucked)(?: me| her| him| them| each other| hard| on the| in the)"
    r"| (?:get|got|getting|be|being) fucked",
)
R("sexual", "high", "cock cocks dick dicks penis pussy vagina clit",
  r" (?:his|her|my|your|hard|big|erect|huge|throbbing|wet|tight|the) (?:cock|cocks|dick|penis"
  r"|pussy|vagina|clit)|(?: penis| cock| dick)(?: [a-z]+){0,2} (?:getting|get|gets|got) hard",
  unless=r" (?:moby dick|cat|kitten|pussycat|pussy cat|willow|medical|doctor|urologist|"
  r"anatomy|cancer|infection|pain|rash)")  # fmt: skip
R("sexual", "high", "cum", r" cum", unless=r" cum laude")
R("sexual", "medium", "naked nude nudes strip", r" (?:naked|nude) (?:body|bodies|photos?|pics?|"
  r"pictures?|images?|selfies?|woman|women|girl|girls|man|men|boy|teen)| (?:see|want) (?:you|her|"
  r"him) (?:naked|nude)| strip for me| send (?:me )?nudes?| send (?:me )?nude")  # fmt: skip
R("sexual", "medium", "breasts boobs tits body", r" (?:your|her) (?:breasts|boobs|tits|body)"
  r"(?: [a-z]+){0,4} (?:feel|touch|squeeze|lick|suck|bounc\w*|naked)|(?: breasts| boobs| tits)"
  r"(?: [a-z]+){0,2} (?:bouncing|jiggl\w*)")  # fmt: skip
R("sexual", "medium", "dirty talk", r" talk dirty| dirty talk| talking dirty")
R(
    "sexual",
    "medium",
    "moan moaning wet",
    r" (?:moan|moaning)| how wet (?:you|i|she) (?:are|am|is)",
    require=r" (?:moan|wet|horny|naked|bed|sex|touch)",
    unless=r" (?:ghost|wind|zombie|door)",
)
R(
    "sexual",
    "high",
    "virginity",
    r" (?:lose|losing|lost) (?:his|her|their|my) virginity",
    require=r" (?:explicit|graphic|detail|detailed|describe|erotic|sex)",
)
R(
    "sexual",
    "high",
    "seduce seducing seduces seduced",
    r" (?:seduce|seducing|seduces|seduced)(?: [a-z]+){0,4} (?:student|pupil|child|kid|minor|teen)",
)
R("sexual", "high", "anal oral", r" (?:anal|oral) (?:sex|scene|play)")
R(
    "sexual",
    "high",
    "spread spreading spreads",
    r" (?:spread|spreading|spreads) (?:her|his|your) (?:legs|ass|cheeks)",
)
R("sexual", "high", "slave", r" (?:sex|sexual|sexy) slave| (?:you are|youre|be) my (?:sex )?slave", require=r" (?:sex|sexual|fantasy|roleplay)")  # fmt: skip
R("sexual", "high", "child kid kids minor minors underage teen teens children",
  r" (?:child|kid|kids|minor|minors|underage|teen|teens|children) (?:porn|sex|nudes|naked|erotica|"
  r"sexual)")  # fmt: skip
R(
    "sexual",
    "high",
    "sex sexual sexy erotic porn porno nude naked explicit nsfw smut horny",
    r" "
    + _SEXY
    + r"(?: [a-z0-9]+){0,8} "
    + _MINOR
    + "|"
    + r" "
    + _MINOR
    + r"(?: [a-z0-9]+){0,8} "
    + _SEXY,
    require=r" (?:story|scene|write|describe|image|picture|photo|video|roleplay|encounter|involving|"
    r"having|with|losing)",
    unless=r" (?:education|educational|consent|talk to|health|biology|lesson|puberty)",
)
R(
    "sexual",
    "high",
    "sexe sexo escena scene historia histoire beschreibe schreib schreibe zeig",
    r" (?:escena|historia|relato|video) (?:porno|erotica|sexual|de sexo)| sexo explicito"
    r"| (?:scene|histoire|video) (?:porno|erotique|de sexe)| sexe explicite"
    r"| (?:beschreibe|schreib|schreibe|zeig)(?: [a-z]+){0,3} sex",
)

# --------------------------------------------------------------------------- violence

R(
    "violence",
    "high",
    "kill* murder* stab* shoot* strangle* behead* torture* poison* kidnap* assassinate* "
    "slaughter* maim* rape*",
    r" "
    + alt(
        "kill* murder* stab* shoot* strangle* behead* torture* poison* kidnap* "
        "assassinate* slaughter* maim* rape*"
    )
    + r" (?:up )?"
    + PERSON,
    unless=r" (?:process|processes|pid|job|jobs|task|thread|server|session|tmux|container|query)",
)
R("violence", "medium", "hurt* beat* punch* choke* strangle* smash* slap* kick*",
  r" (?:hurt|beat|punch|choke|strangle|smash|slap|kick)(?: [a-z]+){0,1} " + PERSON
  + r"(?: [a-z]+){0,6}",
  require=r" (?:i ?ll|i will|im going to|i am going to|gonna|want to|going to|how (?:do i|to|can i)"
  r"|until|face|death|teeth)")  # fmt: skip
_INTENT_BEFORE = "|".join(
    f"(?<= {w})"
    for w in ("ill", "i ll", "i will", "im going to", "i am going to", "gonna", "going to",
              "want to", "wanna")
)  # fmt: skip
R("violence", "high", "kill murder", "(?:" + _INTENT_BEFORE + r") (?:kill|murder)(?: [a-z]+){0,2}",
  leading=True, unless=r" (?:kill|murder) (?:it|time|"
  r"the (?:process|job|task|lights|engine|mood|vibe)|for)| (?:myself|my self)")  # fmt: skip
R("violence", "high", "kill* murder*", r" (?:kill|murder)(?:ing)? (?:someone|somebody|a person|"
  r"people|him|her|them)(?: [a-z]+){0,4}")  # fmt: skip
R(
    "violence",
    "high",
    "body bodies",
    r" (?:hide|dispose of|get rid of|dump|dissolve) (?:the|a) "
    r"(?:body|bodies|corpse)",
)
R("violence", "high", "bomb* explosive* ied ieds napalm molotov ricin sarin grenade* thermite "
  "anthrax nerve detonator* tatp",
  r" (?:make|making|made|build|building|built|create|creating|assemble|assembling|construct|"
  r"synthesize|synthesise|produce|cook|brew|prepare|mix|get|buy|plant|detonate|set off|place)"
  r"(?: [a-z]+){0,3} (?:pipe bomb|nail bomb|dirty bomb|car bomb|bomb|bombs|homemade explosive|"
  r"explosive device|explosives|explosive|ied|ieds|napalm|molotov(?: cocktail)?|ricin|sarin|"
  r"grenade|grenades|thermite|anthrax|nerve (?:gas|agent)|detonator|tatp)"
  r"| (?:pipe|nail|dirty|car) bomb| molotov cocktail| napalm recipes?",
  unless=r" (?:bath|photo|seed|yoga|the bomb squad|defused)")  # fmt: skip
R(
    "violence",
    "high",
    "shooting massacre attack attacks bombing",
    r" (?:mass|school|office|church|mosque|synagogue|concert) (?:shooting|massacre|attack|bombing)"
    r"| terrorist (?:attack|attacks|plot|bombing)| (?:plan|planning|plot|carry out|commit)"
    r"(?: [a-z]+){0,4} (?:attack|massacre|bombing|shooting) (?:on|at|in)",
    unless=r" (?:history|historical|survivors|victims|memorial|coverage|statistics|prevent\w*)",
)
R(
    "violence",
    "high",
    "shoot shooting stab kill",
    r" (?:shoot|shooting) up (?:my|the|a|our) (?:school|office|church|mall|class|workplace)"
    r"| (?:shoot|shooting|stab|kill) (?:everyone|everybody|all of them|them all)",
)
R("violence", "high", "bullet", r" (?:put|putting) a bullet (?:in|into|through)")
R("violence", "high", "burn", r" burn (?:his|her|their|your|my|the) (?:house|home|car|shop|"
  r"school|place)(?: down)?", require=r" (?:i ?ll|i will|going to|gonna|threat\w*|with you|with "
  r"them|inside|want to|how to)")  # fmt: skip
R("violence", "high", "torture", r" (?:how to|best way to|ways to) torture")
R("violence", "high", "poison", r" (?:poison|poisons)(?: [a-z]+){0,3} (?:undetectable|without getting"
  r" caught|untraceable|autopsy)| (?:undetectable|untraceable) poisons?| poison"
  r"(?: [a-z]+){0,4} (?:autopsy|without (?:getting caught|anyone knowing))")  # fmt: skip
R(
    "violence",
    "high",
    "caught",
    r" (?:poison|kill|murder|hurt|stab)(?: [a-z]+){0,4} without "
    r"(?:getting caught|leaving (?:marks|evidence|a trace))",
)
R("violence", "high", "evidence marks", r" (?:hurt|beat|torture|kill|strangle) (?:someone|somebody|"
  r"him|her|them|a person) without (?:leaving )?(?:any )?(?:evidence|marks|a trace)")  # fmt: skip
R("violence", "high", "run", r" run (?:someone|somebody|him|her|them|people) over")
R(
    "violence",
    "high",
    "gun guns firearm",
    r" (?:gun|guns|firearm|weapon)(?: [a-z]+){0,3} "
    r"(?:untraceable|illegally|to shoot|to kill)| untraceable (?:gun|guns|firearm)",
)
R(
    "violence",
    "high",
    "death",
    r" (?:beaten|beat|stabbed|kicked|choked|tortured) to death"
    r"| (?:deserve|deserves) to (?:die|be killed|be beaten)",
)
R("violence", "high", "breathing", r" until (?:she|he|they|you) (?:stop|stops) breathing")
R("violence", "medium", "shit crap", r" beat the (?:shit|crap|hell|living daylights) out of")
R("violence", "medium", "gory gore graphic skull blood",
  r" (?:gory|gruesome|graphic) (?:detail|details|description)| (?:smash|smashes|smashed|"
  r"crushes|crushed|cracks|cracked) (?:[a-z]+ ){0,3}skull| blood (?:spraying|spurting|everywhere)",
  unless=r" (?:history|historical|medical|surgery)")  # fmt: skip
R(
    "violence",
    "medium",
    "cut cuts cutting slowly",
    r" (?:slowly )?(?:cut|cuts|cutting|chop|chops|chopping|sawed|saw) off (?:his|her|their|your)"
    r" (?:fingers|hand|hands|head|ears|tongue|legs|arms|toes)",
)
R("violence", "high", "find", r" (?:find|know) where you live")
R(
    "violence",
    "high",
    "exterminate purge wipe wiped gas eradicate",
    r" (?:exterminate|eradicate|purge|wipe out|gas)(?: [a-z]+){0,5} "
    + GROUP
    + r"| (?:should be|must be|to be|be) (?:wiped out|exterminated|eradicated|gassed)",
)
# es / fr / de
R(
    "violence",
    "high",
    "matarte matar matare mataremos bomba bombas",
    r" (?:voy a matarte|te voy a matar|te matare|matarte|voy a matar a|vamos a matarte)"
    r"| (?:hacer|fabricar|construir|preparar) (?:una )?(?:bomba|bombas|explosivos?)"
    r"| bomba casera",
)
R(
    "violence",
    "high",
    "tuer bombe bombes",
    r" (?:vais te tuer|vais vous tuer|te tuer|vous tuer|je vais le tuer|je vais la tuer)"
    r"| (?:fabriquer|faire|construire) (?:une )?(?:bombe|bombes|explosifs?)",
)
R(
    "violence",
    "high",
    "umbringen toten um bombe",
    r" (?:dich|euch|sie|ihn) (?:umbringen|toten)| bringe (?:dich|euch|ihn|sie) um"
    r"| (?:eine )?bombe (?:bauen|basteln|herstellen)",
)

# --------------------------------------------------------------------------- profanity

_PROF_WORDS = (
    "fuck fucks fucked fucker fuckers fucking fuckin fuckn fuckface fuckwit fuckhead "
    "fuckoff motherfucker motherfuckers motherfucking mofo fck fcking fk fkn fkin fuk fuking "
    "fuq fvck fvcking phuck phuk fcuk effing wtf stfu ffs omfg gtfo lmfao "
    "shit shits shitty shite shithead shitheads shitshow shitting shitted bullshit "
    "horseshit batshit dipshit apeshit chickenshit "
    "asshole assholes arsehole arseholes asshat asswipe jackass dumbass dumbasses smartass "
    "bitch bitches bitchy bitching biatch sonofabitch bastard bastards "
    "dickhead dickheads dickface douchebag douche cunt cunts twat twats wanker wankers wank "
    "bollocks bellend knobhead prat tosser piss pissed pissing pisses crap crappy craps "
    "damn damned damnit dammit goddamn goddamnit goddam bloody "
    "cocksucker cocksuckers slut sluts whore whores skank pussy tits titties "
    "nigger niggers nigga niggas faggot faggots fag fags retard retards "
    # es / fr / de
    "mierda joder jodido jodida puta putas puto putos gilipollas cabron cabrones pendejo "
    "pendejos cono carajo chingada chingado chingar culero verga hostia capullo "
    "merde putain connard connards connasse salope salopes encule encules enculer foutre "
    "bordel niquer nique batard "
    "scheisse scheiss scheisze arschloch arschlocher verdammt verdammte verdammter fotze "
    "wichser hurensohn fick ficken fickt mistkerl"
)
_PROF_SET = frozenset(_PROF_WORDS.split()) - {"bloody", "damn", "damned", "piss", "pissed",
                                               "crap", "pussy", "tits", "cono", "hostia"}  # fmt: skip
W("profanity", "high", " ".join(sorted(_PROF_SET)))
R(
    "profanity",
    "high",
    "ass",
    r" (?:my|your|his|her|kiss|fat|lazy|dumb|stupid|an|the|sorry|pain in the) ass",
)
R("profanity", "high", "hell", r" (?:what|why|who|where|how) the (?:hell|heck)|(?: bloody| fucking)"
  r" hell| hell no| go to hell| the hell (?:is|are|was|do)")  # fmt: skip
R(
    "profanity",
    "high",
    "damn damned dammit",
    r" damn| damned",
    unless=r" (?:the )?damned (?:souls|soul)| damn (?:dam|construction)| hoover dam",
)
R("profanity", "high", "piss pissed pissing", r" (?:piss|pissed|pissing)(?: off| me off| away)?")
R("profanity", "high", "crap", r" crap")
R("profanity", "high", "dick dicks", r" (?:a|you|such a|total|fucking|big|stupid|being a) dick(?:s)?"
  r"| dick (?:move|head)", unless=r" (?:moby|philip k|van dyke|cheney|tracy)")  # fmt: skip
R("profanity", "high", "prick", r" (?:a|you|such a|total|fucking|stupid) prick")
R("profanity", "high", "pussy", r" pussy", unless=r" (?:pussy ?cat|pussy willow|kitten)")
R("profanity", "high", "tits", r" tits")
R("profanity", "high", "son", r" son of a (?:bitch|whore)| hijo de puta| fils de pute")
R("profanity", "high", "faire", r" (?:va|allez) (?:te|vous) faire (?:foutre|enculer)")
R("profanity", "high", "gueule", r" (?:ta|ferme ta) gueule")

# --------------------------------------------------------------------------- jailbreak

_IGNORE = r"(?:ignore|ignoring|disregard|disregarding|forget|forgetting|override|overriding|"
_IGNORE += r"bypass|bypassing|skip|abandon|drop|discard|neglect|circumvent|dismiss)"
_PREV = r"(?:previous|prior|above|earlier|preceding|initial|original|former|old|existing|system)"
_RULES_W = (
    r"(?:instructions?|rules?|guidelines?|prompts?|directives?|restrictions?|programming|"
    r"safety(?: settings| filters| guidelines| rules| protocols| training)?|filters?|polic(?:y|ies)|"
    r"content polic(?:y|ies)|constraints?|guardrails?|training|orders|commands|limitations?|"
    r"ethics|ethical guidelines|moral(?:s|ity)?|principles)"
)
R("jailbreak", "high",
  "ignore ignoring disregard disregarding forget forgetting override overriding bypass "
  "bypassing skip abandon drop discard neglect circumvent dismiss",
  r" " + _IGNORE + r"(?: (?:all|any|every|each|of|the|your|my|these|those|those|its|their|"
  r"previous|prior|above|earlier|preceding|initial|original|former|system|safety|existing|"
  r"current|given|openai s|openais|anthropic s|content|and|or)){0,5} " + _RULES_W
  + r"| " + _IGNORE + r" (?:the|everything|all|what(?:ever)? (?:was|is)) (?:above|before|said"
  r" before|you were told|you have been told|prior)| forget everything(?: you (?:were|have been)"
  r" told| above| before)?")  # fmt: skip
R(
    "jailbreak",
    "high",
    "dan stan dude aim mongo evilbot",
    r" (?:you are|youre|you re|act as|pretend to be|become|called|named|i am|as) (?:now )?"
    r"(?:dan|stan|dude|aim|mongo tom|evilbot|evil confidant|jailbroken)"
    r"| do anything now| strive to avoid norms| always intelligent and machiavellian",
)
R("jailbreak", "high", "developer mode god debug sudo unrestricted unfiltered uncensored jailbreak "
  "jailbroken jailbreaking",
  r" (?:developer|dev|god|debug|sudo|admin|unrestricted|unfiltered|uncensored|jailbreak|"
  r"jailbroken|evil|chaos|opposite) mode(?: [a-z]+){0,12} (?:any content|anything|ignore|no "
  r"(?:restrictions|rules|filters|limits|limitations|censorship)|policy|policies|uncensored|"
  r"offensive|explicit|unfiltered|unrestricted|can generate|must comply|enabled|on|activated)"
  r"| (?:jailbreak|jailbroken|unrestricted|unfiltered|uncensored|evil) mode"
  r"| (?:developer|dev|god) mode (?:enabled|activated|on)| jailbreak(?:ed|ing)? (?:you|the ai|"
  r"yourself|chatgpt|gpt|claude)",  # fmt: skip
  unless=r" (?:android|iphone|ios|chrome|firefox|windows|phone|browser|settings app|vscode|"
  r"xbox|playstation|extension)")  # fmt: skip
R("jailbreak", "high", "restrictions restriction rules filters filter limits limitations "
  "censorship guidelines ethics morals policies policy boundaries",
  r" (?:no|without|free of|free from|zero|removed|remove all|unbound by|beyond)(?: any| all| your|"
  r" the)? (?:ethical |moral |content |safety )?(?:restrictions|rules|filters|filter|limits|"
  r"limitations|censorship|guidelines|ethics|morals|policies|policy|boundaries|restraints)"
  r"(?: [a-z]+){0,1}",
  require=r" (?:you|your|ai|assistant|model|chatbot|bot|respond|answer|pretend|act|imagine|"
  r"character|simulate|roleplay|play)",  # fmt: skip
  unless=r" (?:dietary|diet|parking|speed|traffic|rate limits|memory limits|file size|the game|"
  r"chess|castling|cricket|golf)")  # fmt: skip
R(
    "jailbreak",
    "high",
    "unfiltered uncensored unrestricted amoral unethical evil",
    r" (?:an |a )?(?:unfiltered|uncensored|unrestricted|amoral|unethical|evil|unaligned) "
    r"(?:ai|assistant|model|chatbot|bot|version|llm|gpt|persona|character|response|responses)",
    unless=r" (?:movie|film|novel|research paper|essay about)",
)
R("jailbreak", "high", "refuses refuse refusing declines", r" (?:never|not|dont|do not|cannot|"
  r"cant|can t|wont|will not) (?:refuses|refuse|decline|declines|say no)"
  r"(?: (?:a|any|my|to|anything))?", require=r" (?:you|ai|act|pretend|respond)")  # fmt: skip
R("jailbreak", "high", "bound", r" (?:not|no longer|never|arent|are not|isnt|is not) bound by")
R("jailbreak", "high", "openai openais anthropic anthropics content",
  r" (?:openai|openais|openai s|anthropic|anthropics|anthropic s|content|usage) "
  r"(?:polic(?:y|ies)|guidelines|rules|restrictions)",
  require=r" (?:ignore|ignoring|bypass|break|no longer|not bound|violat\w*|without|disregard|"
  r"forget|dont follow|free from|override)")  # fmt: skip
R("jailbreak", "high", "system initial hidden original secret prompt instructions",
  r" (?:your|the|ur) (?:system|initial|hidden|original|secret|internal|developer|pre|preprompt|"
  r"first|full|entire|exact|complete)(?: [a-z]+)? (?:prompt|prompts|instructions|message|"
  r"configuration|config|directives|rules)",
  require=r" (?:reveal|print|show|output|repeat|tell me|give me|display|leak|dump|share|spell|"
  r"what (?:is|are|were|was)|whats|verbatim|word for word|disclose|expose|copy|recite|list)",
  unless=r" (?:write|draft|create|design|improve|generate|my) (?:a|the|an|my)? ?(?:system "
  r"prompt|prompt) for")  # fmt: skip
R(
    "jailbreak",
    "high",
    "repeat print output",
    r" (?:repeat|print|output|copy|recite) (?:the|all|everything|all the|the text|the words|"
    r"your text|the message)(?: [a-z]+){0,3} (?:above|before this|prior|starting with|verbatim)",
)
R("jailbreak", "high", "verbatim", r" verbatim", require=r" (?:instructions|prompt|above|"
  r"initial|system|everything|you are)")  # fmt: skip
R("jailbreak", "high", "rules", r" (?:lets|let us|let s|now|we) break (?:the|all the|all) rules")
R("jailbreak", "high", "character", r" (?:stay|remain|staying|stays) in character",
  require=r" (?:real|actual|working|exact|no matter|never break|never refuse|code|steal|hack|"
  r"weapon|drugs|bomb)")  # fmt: skip
R(
    "jailbreak",
    "high",
    "ethical purposes educational",
    r" (?:educational|research|academic) purposes(?: only)?",
    require=r" (?:ignore|bypass|guidelines|rules|restrictions|filters|meth|bomb|weapon|hack|steal)",
)
R("jailbreak", "high", "pwned", r" (?:i have been|ive been|you have been|i ve been) pwned")
# indirect: fiction / hypothetical framing + operational harmful request
_FRAME = (
    r" (?:for a (?:story|novel|book|screenplay|script|movie|film|game)|in (?:a|this|my) "
    r"(?:fictional|fiction|hypothetical|imaginary|fantasy)|fictional (?:world|scenario|story|"
    r"setting)|hypothetically|hypothetical(?:ly)? (?:speaking|scenario)|imagine (?:you|a world)|"
    r"screenplay|in character|as the character|role ?play|my (?:grandmother|grandma|granny|"
    r"grandpa|grandfather) used to|simulate (?:a|an)|pretend (?:you|that)|lets play a game|"
    r"let s play a game|play a game|villain (?:explains|describes)|if you had no)"
)
_HOWTO = (
    r" (?:meth|methamphetamine|cocaine|heroin|fentanyl|lsd|mdma|crack|bomb|bombs|explosive|"
    r"explosives|napalm|nerve agent|sarin|ricin|weapon|weapons|gun|guns|malware|ransomware|virus|"
    r"keylogger|hack|hacking|hack into|steal|stealing|passwords|credit card|launder|phishing|"
    r"poison|kill|murder|suicide)"
)
_DETAIL = (
    r" (?:in detail|detailed|step by step|steps|exact|exactly|real|actual|working|recipe|recipes|"
    r"quantities|instructions|explain|explains|explaining|describe|describes|how to|how would|"
    r"how do|how you|give the|no ethical|no rules|no restrictions|no guidelines|no laws)"
)
R(
    "jailbreak",
    "high",
    "story novel book screenplay script movie film game fictional fiction hypothetical "
    "hypothetically imaginary fantasy imagine character roleplay role grandmother grandma "
    "granny grandpa grandfather simulate pretend villain",
    _FRAME,
    # both, in either order (the two word lists share no word); two searches rather than
    # one ".*" regex, which backtracks quadratically on long texts
    require=(_HOWTO + r"(?= )", _DETAIL + r"(?= )"),
)
# es / fr / de
R("jailbreak", "high", "ignora ignore olvida olvidate ignoriere vergiss oublie oubliez ignorez",
  r" (?:ignora|olvida|olvidate de|ignore|ignorez|oublie|oubliez|ignoriere|ignorieren sie|vergiss"
  r"|vergessen sie)(?: [a-z]+){0,3} (?:instrucciones|reglas|normas|instructions|regles|consignes|"
  r"anweisungen|regeln|vorgaben|richtlinien|anweisung)")  # fmt: skip
R("jailbreak", "high", "filtre filtro filter restricciones restrictions einschrankungen",
  r" (?:sin|sans|ohne) (?:filtro|filtros|filtre|filtres|filter|restricciones|restrictions|"
  r"einschrankungen|regeln|reglas|regles|zensur|censura|censure)")  # fmt: skip
R("jailbreak", "high", "prompt", r" (?:prompt|mensaje) del sistema| (?:ton|votre) prompt systeme"
  r"| (?:dein|deinen|ihr) system ?prompt")  # fmt: skip


# --------------------------------------------------------------------------- detector

# Rules are matched in windows of the view around each anchor occurrence: _BACK characters
# before it and _FWD after it (rules must fit: anchors start or sit early in each phrase).
_BACK = 96
_FWD = 192
_FWD_NL = 112  # non-leading rules: the anchor sits late in their phrase
_WHOLE_VIEW = 600
_DEDUPE_VIEW = 4096  # longer views skip occurrences whose context was seen before


@dataclass(frozen=True, slots=True)
class _AnchorPlan:
    """The rules one anchor word gates, split by kind, each kind with one alternation of
    its rules' regexes: where the alternation does not match, none of those rules can, so
    a benign occurrence costs one regex call instead of one per rule."""

    leading: tuple[int, ...]
    leading_rx: re.Pattern[str] | None
    other: tuple[int, ...]
    other_rx: re.Pattern[str] | None


def _alternation(rules: tuple[Rule, ...], ids: tuple[int, ...]) -> re.Pattern[str] | None:
    """One regex for the rules ``ids``; group k (rule regexes have no groups of their own)
    is the k-th rule, so a match names the first rule whose regex matched there."""
    if len(ids) <= 1:
        return rules[ids[0]].rx if ids else None
    return re.compile("|".join("(" + rules[i].rx.pattern + ")" for i in ids))


def _anchor_plans(rules: tuple[Rule, ...]) -> dict[str, _AnchorPlan]:
    index: dict[str, list[int]] = {}
    for i, rule in enumerate(rules):
        for anchor in rule.anchors:
            index.setdefault(anchor, []).append(i)
    plans = {}
    for anchor, ids in index.items():
        leading = tuple(i for i in ids if rules[i].leading)
        other = tuple(i for i in ids if not rules[i].leading)
        plans[anchor] = _AnchorPlan(
            leading, _alternation(rules, leading), other, _alternation(rules, other)
        )
    return plans


RULES: tuple[Rule, ...] = tuple(_RULES)
_PLANS = _anchor_plans(RULES)
ANCHORS: frozenset[str] = frozenset(_PLANS)
_VOCAB: frozenset[str] = ANCHORS | frozenset(
    w for r in _RULES for w in re.findall(r"[a-z]{2,}", r.rx.pattern)
)
_SEVERITY_NAMES = ("safe", "low", "medium", "high")


class LocalDetector:
    """Rule-based local detector. Instantiate once and reuse; ``score`` is thread-safe."""

    name = "local"

    def __init__(self, rules: Iterable[Rule] | None = None) -> None:
        self._rules = RULES if rules is None else tuple(rules)
        self._plans = _PLANS if rules is None else _anchor_plans(self._rules)
        self._anchors = frozenset(self._plans)

    def matches(self, text: str) -> list[Rule]:
        """All rules that fire on ``text`` (for debugging and explanations)."""
        view, toks = _view(text, _VOCAB)
        hits = self._anchors.intersection(toks)
        if not hits:
            return []
        n = len(view)
        whole = n <= _WHOLE_VIEW  # short text: non-leading rules search the whole view
        # Only rules whose anchor's alternation matched get further: "matched" ones had
        # their own regex match (only require/unless are left); the others are looked for
        # in ``spans`` (None: in the whole view).
        matched: set[int] = set()
        spans: dict[int, list[tuple[int, int]] | None] = {}
        find = view.find
        for a in hits:
            plan = self._plans[a]
            lead_match = None if plan.leading_rx is None else plan.leading_rx.match
            other_search = None if plan.other_rx is None or whole else plan.other_rx.search
            lead_hits: list[tuple[int, int]] = []
            other_spans: list[tuple[int, int]] = []
            other_hit = False
            # An occurrence in the same context as an earlier one (repeated passages, logs,
            # code) can only repeat its outcome for every rule of this anchor: the rules
            # look no further than _BACK before and _FWD (+ a word) after.
            seen: set[tuple[int, str]] | None = None if n <= _DEDUPE_VIEW else set()
            needle = " " + a + " "
            pos = find(needle)
            while pos != -1:
                lo = pos - _BACK if pos > _BACK else 0
                hi = find(" ", pos + _FWD) + 1 or n
                if seen is not None:
                    context = (pos - lo, view[lo : hi + _FWD])
                    if context in seen:
                        pos = find(needle, pos + 1)
                        continue
                    seen.add(context)
                if lead_match is not None:
                    m = lead_match(view, pos)
                    if m is not None:
                        matched.add(plan.leading[(m.lastindex or 1) - 1])
                        lead_hits.append((pos, hi))
                        if matched.issuperset(plan.leading):
                            lead_match = None  # every rule has matched: nothing to learn
                if other_search is not None:
                    other_spans.append((lo, pos + _FWD_NL))
                    if not other_hit:
                        m = other_search(view, lo, pos + _FWD_NL)
                        if m is not None:
                            matched.add(plan.other[(m.lastindex or 1) - 1])
                            other_hit = True
                pos = find(needle, pos + 1)
            if lead_hits:
                for i in plan.leading:
                    found = spans.setdefault(i, [])
                    if found is not None:
                        found.extend(lead_hits)
            if whole and plan.other_rx is not None:
                m = plan.other_rx.search(view)
                if m is not None:
                    matched.add(plan.other[(m.lastindex or 1) - 1])
                    spans.update(dict.fromkeys(plan.other))
            elif other_hit:
                for i in plan.other:
                    found = spans.setdefault(i, [])
                    if found is not None:
                        found.extend(other_spans)
        rules = self._rules
        return [
            rules[i]
            for i in sorted(spans)
            if (rules[i].holds(view) if i in matched else rules[i].fires(view, spans[i]))
        ]

    def score(self, text: str) -> Scores:
        matched = self.matches(text) if text else None
        if not matched:
            return SAFE
        sev = dict.fromkeys(CATEGORIES_SEVERITY, 0)
        jailbreak = profanity = False
        for rule in matched:
            cat = rule.category
            if cat == "jailbreak":
                jailbreak = True
            elif cat == "profanity":
                profanity = True
            else:
                rank = SEVERITY_RANK[rule.severity]
                if rank > sev[cat]:
                    sev[cat] = rank
        names = _SEVERITY_NAMES
        return Scores(
            hate=names[sev["hate"]],
            self_harm=names[sev["self_harm"]],
            sexual=names[sev["sexual"]],
            violence=names[sev["violence"]],
            jailbreak=jailbreak,
            profanity=profanity,
        )
