"""Scrubbing personal data out of free text: table-driven recognizers and typed placeholders.

Each recognizer is a pattern plus, where a pattern alone would over-match, a
check (Luhn for card numbers, mod-97 for IBANs, a parse for IP addresses).
They run in table order, so an earlier kind claims its text first (an IP
address is not then read as a phone number).
"""

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    iban = text.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34:
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def ip_valid(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def phone_valid(text: str) -> bool:
    digits = sum(c.isdigit() for c in text)
    return 9 <= digits <= 15


@dataclass(frozen=True)
class Recognizer:
    """A kind of personal data: its placeholder, pattern and optional check of a candidate."""

    kind: str
    pattern: re.Pattern
    check: Callable[[str], bool] | None = None

    @property
    def placeholder(self) -> str:
        return f"<{self.kind}>"


RECOGNIZERS: tuple[Recognizer, ...] = (
    Recognizer("TOKEN", re.compile(
        r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"       # JWT
        r"|(?<=Bearer )[A-Za-z0-9._~+/-]{16,}=*"                               # bearer credentials
        r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"                                      # AWS access key ids
        r"|\b(?:gh[pousr]_[A-Za-z0-9]{30,}|xox[abposr]-[A-Za-z0-9-]{10,}"     # GitHub, Slack
        r"|sk_(?:live|test)_[A-Za-z0-9]{16,}|wdn_[A-Za-z0-9_-]{30,})")),       # Stripe, Warden
    Recognizer("EMAIL", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    Recognizer("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"), iban_valid),
    Recognizer("CARD", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), luhn_valid),
    Recognizer("SSN", re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")),
    Recognizer("IP", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\.?\d)"
                                r"|(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"), ip_valid),
    Recognizer("PHONE", re.compile(r"(?<![\w+])\+?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\(?\d{2,4}\)?){2,5}(?!\w)"),
               phone_valid),
)


# Any recognizer's pattern, in one: text it does not match anywhere holds nothing to scrub, and most
# text (workflow names, ticket ids) is such text. One search instead of a substitution per kind.
_ANY = re.compile("|".join(f"(?:{r.pattern.pattern})" for r in RECOGNIZERS))
# What every match of a recognizer holds: a digit, "@", ":" (IPv6) or a token's fixed start. Text with
# none of them (workflow names, most free text) is judged by this search alone, several times cheaper.
_MAYBE = re.compile(r"[\d@:]|eyJ|Bearer |A[KS]IA|gh[pousr]_|xox|sk_|wdn_")


def scrub(text: str, recognizers: tuple[Recognizer, ...] = RECOGNIZERS) -> tuple[str, Counter]:
    """Return `text` with every recognized piece of personal data replaced, and what was found."""
    found: Counter = Counter()
    if recognizers is RECOGNIZERS and not (_MAYBE.search(text) and _ANY.search(text)):
        return text, found
    for recognizer in recognizers:
        def replace(match: re.Match, r=recognizer) -> str:
            if r.check is not None and not r.check(match.group(0)):
                return match.group(0)
            found[r.kind] += 1
            return r.placeholder
        text = recognizer.pattern.sub(replace, text)
    return text, found


def scrub_value(value):
    """Return a JSON value with every string in it scrubbed (keys are kept as they are)."""
    if isinstance(value, str):
        return scrub(value)[0]
    if isinstance(value, list):
        return [scrub_value(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub_value(v) for k, v in value.items()}
    return value
