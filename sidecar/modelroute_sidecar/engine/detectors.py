"""Content detectors: does a prompt contain an e-mail address, a phone number, a payment card or an IBAN?

A policy's residency section maps detector kinds to data classes; a detector only answers "found or not".
They run on every request that declares no class, inside a ~50 µs decision budget, so:

- each detector is one precompiled regular expression plus a checksum where the format has one (Luhn for
  cards, ISO 7064 mod-97 and the registry length for IBANs), which keeps random digit runs (order ids,
  timestamps) from being taken for personal data;
- the digit-based detectors (phone, card, IBAN) never scan the whole prompt with a regex: `ContentScan`
  first finds, at C speed on a byte mask, the places where at least 8 digits sit close together (every
  phone number, card number and IBAN has that), and the detectors read only a window around each;
- the e-mail pattern starts with the literal `@`, which the regex engine finds with a fast scan.

Patterns only start at a token boundary and are possessive where a digit run could be split many ways, so
a long or hostile prompt costs linear time.

A policy may add its own `pattern` detectors (named regular expressions, e.g. an employee id). Those are
compiled by RE2 (`compile_pattern`, below), which matches in time linear in the text whatever the
pattern, so a policy cannot make a prompt cost exponential time; each runs once per request over the same
normalised text as the built-in detectors (`ContentScan.matches`). Whether a pattern is valid RE2 is
decided here too, once for both sides (`detector_problem`, `config_pattern_problem`): the operator's
compiler and admission call it, and the sidecar calls it on every config it loads; the contract package
only checks a pattern's shape, since it imports nothing but pydantic.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from modelroute_contract import PATTERN_DETECTORS_MAX, RouterConfig
from modelroute_contract import detector_problem as detector_shape_problem

if TYPE_CHECKING:
    import re2

DetectorKind = str
"""One of `email`, `phone`, `card`, `iban` (the contract's built-in `Detector.kind`s; kind `pattern` runs
through `ContentScan.matches`)."""

_EMAIL = re.compile(
    # Starts at the `@` (fast literal scan), then looks back for a local-part character.
    # Domain labels may be internationalised (`bücher.de`) or hold look-alike letters (a Cyrillic `а`):  # noqa: RUF003
    # any word character counts, and the TLD is 2+ letters of any script (or an `xn--` label).
    r"@(?<=[\w.%+-]@)[\w-]+(?:\.[\w-]+)*\.(?:[^\W\d_]{2,}|xn--[a-z0-9-]+)",
    re.IGNORECASE,
)


def find_email(text: str) -> bool:
    """Whether `text` contains something shaped like an e-mail address (`local@domain.tld`)."""
    return "@" in text and _EMAIL.search(text) is not None


_PHONE = re.compile(
    r"(?<![\w+])(?:"
    # International: +<country code> then 2-6 groups (optionally parenthesised), any of ' .-' between.
    # Possessive so a long digit run is not re-split in every possible way before failing.
    r"\+[0-9]{1,3}(?:[ .-]?(?:\([0-9]{1,4}\)|[0-9]{1,4})){2,6}+"
    # North American style: (415) 555-2671, 415-555-2671, 415.555.2671, 415 555 2671.
    r"|(?:\([0-9]{3}\)[ .-]?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}"
    # National with a trunk 0 (or the 00 international prefix) and one consistent separator:
    # 020 7946 0958, 06 12 34 56 78, 030-12345678. The consistent separator keeps dates such as
    # 01.02.2023 10:30 out.
    r"|0[0-9]{1,4}([ .-])[0-9]{2,8}(?:\1[0-9]{2,8}){0,4}"
    r")(?!\w)"
)
_PHONE_DIGITS = {
    # Digits accepted by the first character of a match: E.164 numbers have at most 15 digits; North
    # American numbers exactly 10.
    "+": (8, 15),
    "0": (9, 15),
}


def find_phone(text: str) -> bool:
    """Whether `text` contains a formatted phone number (international `+…`, North American, or national
    with a trunk `0`). Bare unformatted digit runs are not taken for phone numbers: too many are ids."""
    for match in _PHONE.finditer(text):
        token = match.group()
        digits = sum(ch.isdigit() for ch in token)
        low, high = _PHONE_DIGITS.get(token[0], (10, 10))
        if low <= digits <= high:
            return True
    return False


_CARD = re.compile(
    # 13-19 digits, single spaces or dashes allowed between them, first digit 3-6 (Amex, Diners, JCB,
    # Visa, Mastercard, Discover, UnionPay): other leading digits are not payment cards.
    r"(?<![0-9-])[3-6](?:[ -]?[0-9]){12,18}(?![0-9])"
)


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every payment card number passes; `digits` holds ASCII digits only."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def find_card(text: str) -> bool:
    """Whether `text` contains a payment card number: 13-19 digits, issuer-like first digit, Luhn-valid."""
    return any(luhn_valid(m.group().replace(" ", "").replace("-", "")) for m in _CARD.finditer(text))


IBAN_LENGTHS: Mapping[str, int] = {
    # ISO 13616 registry: country code to IBAN length. A candidate of the wrong length is not an IBAN.
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

_IBAN = re.compile(
    # Country, check digits, then 11-30 letters/digits with optional single spaces (printed groups of 4).
    r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?:[ -]?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])"
)


_LETTER_VALUES = str.maketrans({chr(ord("A") + i): str(10 + i) for i in range(26)})


def iban_valid(iban: str) -> bool:
    """Whether a compact, upper-case IBAN has its country's length and passes the ISO 7064 mod-97 check."""
    if len(iban) != IBAN_LENGTHS.get(iban[:2], -1) or not (iban.isascii() and iban.isalnum()):
        return False
    # Move the first four characters to the end and read letters as 10..35: the number mod 97 must be 1.
    return int((iban[4:] + iban[:4]).translate(_LETTER_VALUES)) % 97 == 1


def find_iban(text: str) -> bool:
    """Whether `text` contains an IBAN (compact or printed in groups), checked by length and mod-97."""
    match = _IBAN.search(text)
    while match is not None:
        compact = match.group().replace(" ", "").replace("-", "").upper()
        length = IBAN_LENGTHS.get(compact[:2])
        # The pattern may run on into a following word ("… 0130 00 AND"): judge the country's length only.
        if length is not None and len(compact) >= length and iban_valid(compact[:length]):
            return True
        # A candidate that fails may have run on into a real IBAN ("DE00… IBAN DE89 …"): go on from the
        # next token inside it, not after it.
        space = text.find(" ", match.start() + 1, match.end())
        match = _IBAN.search(text, space + 1 if space >= 0 else match.end())
    return False


DETECTORS: Mapping[DetectorKind, Callable[[str], bool]] = {
    "email": find_email,
    "phone": find_phone,
    "card": find_card,
    "iban": find_iban,
}
"""Detector function by the contract's `Detector.kind`; each reads any text."""

DIGIT_KINDS = frozenset({"phone", "card", "iban"})
"""Kinds whose every match holds at least `CLUSTER_DIGITS` digits close together (see `digit_windows`)."""

CLUSTER_DIGITS = 8
"""Fewest digits of a phone number (E.164 minimum with country code), card (13) or IBAN (every registry
format has an account number of 8 or more digits, at most single spaces apart)."""
WINDOW_MARGIN = 48
"""Characters read on each side of a digit cluster: an IBAN (34 characters and 8 spaces at most) or a
phone prefix (`+`, `(`) starts no further before its digits."""

# ASCII digits become '9', the separators phone, card and IBAN formats use become '-', all else ' ', so a
# cluster is found by a regex that starts with a literal (a fast scan) on bytes.
_MASK = bytes(
    ord("9") if chr(i).isdigit() and i < 128 else ord("-") if chr(i) in " .-()+/" else ord(" ")
    for i in range(256)
)
_CLUSTER = re.compile(
    # A cluster starts at a digit with no digit up to 3 separators before it (so each cluster is tried
    # once, not from each of its digits), then takes digits at most 3 separators apart, possessively.
    rb"9(?<!9-{0}9)(?<!9-{1}9)(?<!9-{2}9)(?<!9-{3}9)(?:-{0,3}+9){%d,}+" % (CLUSTER_DIGITS - 1)
)
_ASCII_DIGITS = b"0123456789"


def digit_windows(text: str) -> list[str]:
    """The parts of `text` where a phone, card or IBAN detector can match: each place with at least
    `CLUSTER_DIGITS` ASCII digits, at most 3 separators apart, widened by `WINDOW_MARGIN` characters and
    out to whole tokens. Overlapping windows are merged. Empty for most prose."""
    raw = text.encode("utf-8", "surrogatepass")
    # Most prompts hold fewer than 8 digits in all: counting them is cheaper than masking.
    if len(raw) - len(raw.translate(None, _ASCII_DIGITS)) < CLUSTER_DIGITS:
        return []
    spans: list[list[int]] = []
    for match in _CLUSTER.finditer(raw.translate(_MASK)):
        low = raw.rfind(b" ", 0, max(0, match.start() - WINDOW_MARGIN)) + 1
        high = raw.find(b" ", match.end() + WINDOW_MARGIN)
        high = len(raw) if high < 0 else high
        if spans and low <= spans[-1][1]:
            spans[-1][1] = high
        else:
            spans.append([low, high])
    if text.isascii():
        return [text[low:high] for low, high in spans]
    # Byte offsets of non-ASCII text are not character offsets: cut the bytes, then decode.
    return [raw[low:high].decode("utf-8", "ignore") for low, high in spans]


_INVISIBLE = dict.fromkeys(
    # zero-width space/joiners, word joiner, BOM, soft hyphen: invisible, so they split nothing a reader sees
    map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"),
    None,
)
_DASHES = dict.fromkeys(map(ord, "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"), "-")
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")


def normalise(text: str) -> str:
    """What a careless or evasive client sends, seen as a reader sees it: URL escapes decoded (`%40`),
    NFKC (full-width at signs U+FF20, no-break and thin spaces are spaces), invisible characters removed and
    every dash made ASCII. ASCII text without `%` is returned as is (the common, cheap case)."""
    if "%" in text and _PERCENT.search(text):
        text = unquote(text)
    if text.isascii():
        return text
    return unicodedata.normalize("NFKC", text).translate(_INVISIBLE).translate(_DASHES)


class ContentScan:
    """One prompt, scanned lazily: each detector kind runs at most once, digit windows are found once.

    The text is normalised first (`normalise`)."""

    __slots__ = ("_found", "_text", "_windows")

    def __init__(self, text: str) -> None:
        self._text = normalise(text)
        self._windows: list[str] | None = None
        self._found: dict[DetectorKind, bool] = {}

    def finds(self, kind: DetectorKind) -> bool:
        """Whether the detector `kind` finds its pattern in the prompt."""
        found = self._found.get(kind)
        if found is None:
            found = self._detect(kind)
            self._found[kind] = found
        return found

    def matches(self, key: str, regex: Any) -> bool:
        """Whether a policy's compiled pattern (`compile_pattern`: RE2, linear time) matches
        anywhere in the normalised prompt; `key` (the detector's name) caches the answer for this scan."""
        key = "pattern:" + key
        found = self._found.get(key)
        if found is None:
            found = regex.search(self._text) is not None
            self._found[key] = found
        return found

    def _detect(self, kind: DetectorKind) -> bool:
        detect = DETECTORS[kind]
        if kind not in DIGIT_KINDS:
            return detect(self._text)
        if self._windows is None:
            self._windows = digit_windows(self._text)
        return any(detect(window) for window in self._windows)


# --------------------------------------------------------------------- a policy's `pattern` detectors


@functools.cache
def _re2_options() -> re2.Options:
    # RE2 is imported when the first pattern is compiled: most configs have no pattern detector, and
    # the module (with its C++ library) costs a process ~2.6 MiB
    import re2

    options = re2.Options()
    options.log_errors = False  # a refused pattern is reported to whoever sent it, not to stderr
    options.never_capture = True  # only "found or not" is asked: no submatch bookkeeping
    return options


@functools.lru_cache(maxsize=4 * PATTERN_DETECTORS_MAX)
def compile_pattern(pattern: str) -> re2._Regexp:
    """A detector pattern compiled by RE2, which matches in time linear in the text: no pattern a policy
    carries can make a request cost exponential time (no backtracking; backreferences and look-around
    are not RE2 syntax and are refused). Cached: the checks below, the compiler and the sidecar's
    `Classifier` compile each pattern once. Raises `re2.error` when the pattern is not valid RE2."""
    import re2

    return re2.compile(pattern, _re2_options())


def pattern_syntax_problem(pattern: str) -> str | None:
    """Why a detector pattern is not valid RE2 syntax, or None."""
    import re2

    try:
        compile_pattern(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        return f"is not a valid RE2 regular expression: {reason}"
    return None


def detector_problem(kind: str, name: str | None, pattern: str | None) -> tuple[str, str] | None:
    """Why a detector's `name` and `pattern` do not fit its kind: (field, reason), or None. The
    contract's shape check (`modelroute_contract.detector_problem`), then RE2 syntax of a pattern."""
    problem = detector_shape_problem(kind, name, pattern)
    if problem or kind != "pattern" or pattern is None:
        return problem
    syntax = pattern_syntax_problem(pattern)
    return ("pattern", syntax) if syntax else None


def config_pattern_problem(config: RouterConfig) -> str | None:
    """Where and why a RouterConfig carries a `pattern` detector that is not valid RE2, or None (the
    sidecar's check of every config it loads; the contract's validation checked everything else)."""
    for i, policy in enumerate(config.policies):
        for j, detector in enumerate(policy.residency.detectors):
            if detector.kind == "pattern":
                problem = pattern_syntax_problem(detector.pattern)
                if problem:
                    return f"policies.{i}.residency.detectors.{j}.pattern: pattern {problem}"
    return None
