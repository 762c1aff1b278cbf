"""PII recognizers: what each one must catch, and what it must leave alone."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.pii import _ANY, _MAYBE, RECOGNIZERS, iban_valid, luhn_valid, scrub, scrub_value

POSITIVES = [
    ("mail alice.smith+work@example.co.uk now", "<EMAIL>"),
    ("call +44 20 7946 0958 today", "<PHONE>"),
    ("call (555) 123-4567", "<PHONE>"),
    ("tel 0612345678", "<PHONE>"),
    ("pay to GB82 WEST 1234 5698 7654 32", "<IBAN>"),
    ("pay to DE89370400440532013000", "<IBAN>"),
    ("card 4111 1111 1111 1111 exp", "<CARD>"),
    ("card 5500-0000-0000-0004", "<CARD>"),
    ("ssn 123-45-6789", "<SSN>"),
    ("from 192.168.10.1 port", "<IP>"),
    ("from 2001:db8::8a2e:370:7334 ok", "<IP>"),
    ("Authorization: Bearer abcdefghijklmnop1234567890", "<TOKEN>"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "<TOKEN>"),
    ("key AKIAIOSFODNN7EXAMPLE", "<TOKEN>"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "<TOKEN>"),
]

NEGATIVES = [
    "ticket OPS-12 on 2026-11-29 at 10:00:00",
    "order 4111 1111 1111 1112 is not a card (Luhn fails)",
    "invalid GB00WEST12345698765432 iban (mod 97 fails)",
    "version 1.2.3.4.5 and 999.1.1.1",
    "room 12-34 and build 2026.11",
    "db/customers read maintenance",
    "user@localhost has no domain",
    "amount 12345678",
    "time 12:30 and ratio 3:4",
]


@pytest.mark.parametrize("text,placeholder", POSITIVES)
def test_recognizers_catch(text, placeholder):
    scrubbed, found = scrub(text)
    assert placeholder in scrubbed, scrubbed
    assert sum(found.values()) == 1


@pytest.mark.parametrize("text", NEGATIVES)
def test_recognizers_leave_alone(text):
    assert scrub(text) == (text, {})


def test_checks():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB00WEST12345698765432")


def test_scrub_value_walks_json():
    value = {"ticket": "OPS-12", "note": ["mail bob@example.com", {"ip": "10.0.0.1"}], "rows": 3}
    assert scrub_value(value) == {"ticket": "OPS-12", "note": ["mail <EMAIL>", {"ip": "<IP>"}], "rows": 3}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab@.-:+() 0123456789AKIeyJ_xz", max_size=40))
def test_the_one_search_shortcut_never_changes_what_is_scrubbed(text):
    full_table = tuple(RECOGNIZERS)  # not the same object: scrub runs every recognizer, no shortcut
    assert scrub(text) == scrub(text, full_table)


_PIECES = st.sampled_from(["Bearer ", "eyJ", "AKIA", "ASIA", "ghp_", "xoxb-", "sk_live_", "wdn_", "@", ":", ".",
                           "-", "+", "(", ")", " ", "0", "7", "ab", "fe", "\u0663", "GB82", "abcdefghijklmnop", "Z9"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join) | st.text(max_size=40))
def test_text_the_cheap_search_passes_over_holds_nothing_any_recognizer_matches(text):
    if _ANY.search(text) or any(r.pattern.search(text) for r in RECOGNIZERS):
        assert _MAYBE.search(text), text


# What each recognizer's pattern matches with the fewest of the telltale characters: no digit where it can.
_BARE_MATCHES = ["cafe::beef", "AKIAABCDEFGHIJKLMNOP", "ASIAABCDEFGHIJKLMNOP", "xoxb-abcdefghijk",
                 "ghp_" + "a" * 30, "sk_live_" + "a" * 16, "wdn_" + "a" * 30, "Bearer " + "a" * 16,
                 "eyJabcde.abcde.abcde", "a@b.cc", "\u0663\u0663\u0663-\u0663\u0663-\u0663\u0663\u0663\u0663"]


@pytest.mark.parametrize("text", [text for text, _ in POSITIVES] + _BARE_MATCHES)
def test_the_cheap_search_passes_no_known_personal_data_over(text):
    assert _ANY.search(text) and _MAYBE.search(text)
