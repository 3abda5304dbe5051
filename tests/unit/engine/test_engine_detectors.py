"""Content detectors: e-mail, phone, card (Luhn) and IBAN (mod-97), and the digit-window shortcut."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelroute_sidecar.engine.detectors import (
    DETECTORS,
    ContentScan,
    digit_windows,
    find_card,
    find_email,
    find_iban,
    find_phone,
    iban_valid,
    luhn_valid,
)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("write to jane.doe@example.com today", True),
        ("JANE+tag@sub.example.co.uk", True),
        ("<a.b-c_d@mail-server.io>", True),
        ("ünïcode.user@example.de", True),
        ("no at sign here", False),
        ("an @mention on its own", False),
        ("user@localhost", False),
        ("a @ b.com", False),
        ("price@ 5", False),
        ("user@domain.c", False),
    ],
)
def test_email(text: str, found: bool) -> None:
    assert find_email(text) is found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("+1 (415) 555-2671", True),
        ("+44 20 7946 0958", True),
        ("+14155552671", True),
        ("+49 30 1234 5678", True),
        ("tel:+33-1-23-45-67-89", True),
        ("(415) 555-2671", True),
        ("415-555-2671", True),
        ("415.555.2671", True),
        ("415 555 2671", True),
        ("020 7946 0958", True),
        ("06 12 34 56 78", True),
        ("030-12345678", True),
        ("call 555-1234", False),  # too short
        ("+1 234", False),
        ("4155552671", False),  # bare digit runs are ids, not phone numbers
        ("order 12345678901", False),
        ("2024-01-15", False),
        ("01.02.2023 10:30", False),
        ("version 1.2.3", False),
        ("+1234567890123456789", False),  # more than E.164's 15 digits
        ("415-555-26710", False),
    ],
)
def test_phone(text: str, found: bool) -> None:
    assert find_phone(text) is found


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4111111111111111", True),
        ("5555555555554444", True),
        ("378282246310005", True),
        ("6011111111111117", True),
        ("79927398713", True),
        ("4111111111111112", False),
        ("1234567812345678", False),
        ("79927398710", False),
    ],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("4111 1111 1111 1111", True),  # Visa
        ("4111-1111-1111-1111", True),
        ("card: 4111111111111111.", True),
        ("5555 5555 5555 4444", True),  # Mastercard
        ("3782 822463 10005", True),  # Amex, 15 digits
        ("6011 1111 1111 1117", True),  # Discover
        ("4012888888881881", True),
        ("4111 1111 1111 1112", False),  # Luhn fails
        ("1234 5678 9012 3456", False),  # no issuer starts with 1
        ("4111 1111 1111", False),  # 12 digits
        ("41111111111111111111111", False),  # part of a longer digit run
        ("4111  1111 1111 1111", False),  # double space is not one card number
        ("ts 1700000000000", False),
    ],
)
def test_card(text: str, found: bool) -> None:
    assert find_card(text) is found


@pytest.mark.parametrize(
    ("iban", "valid"),
    [
        ("DE89370400440532013000", True),
        ("GB82WEST12345698765432", True),
        ("FR1420041010050500013M02606", True),
        ("NL91ABNA0417164300", True),
        ("BE68539007547034", True),
        ("CH9300762011623852957", True),
        ("NO9386011117947", True),
        ("DE89370400440532013001", False),  # check digits do not match
        ("DE8937040044053201300", False),  # one short for DE
        ("XX89370400440532013000", False),  # no such country
        ("GB82WEST1234569876543!", False),
    ],
)
def test_iban_checksum_and_length(iban: str, valid: bool) -> None:
    assert iban_valid(iban) is valid


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("IBAN DE89 3704 0044 0532 0130 00, thanks", True),
        ("pay to GB82 WEST 1234 5698 7654 32 today", True),
        ("FR14 2004 1010 0505 0001 3M02 606", True),
        ("my iban is de89370400440532013000.", True),
        ("DE89 3704 0044 0532 0130 00 AND MORE WORDS", True),
        ("DE89 3704 0044 0532 0130 01", False),
        ("AB12 3456 7890 1234 5678", False),
        ("ISO8601 timestamps and SHA256 hashes", False),
    ],
)
def test_iban(text: str, found: bool) -> None:
    assert find_iban(text) is found


@pytest.mark.parametrize(
    ("text", "windows"),
    [
        ("no digits at all", 0),
        ("in 2023 we sold 42 units for 17 euros", 0),  # digits, but never 8 close together
        ("card 4111 1111 1111 1111 ok", 1),
        ("a +44 20 7946 0958 b" + " filler" * 40 + " c 4111111111111111", 2),
        ("1234 5678 and 8765 4321", 1),  # two clusters, overlapping windows merged
    ],
)
def test_digit_windows_cover_only_digit_clusters(text: str, windows: int) -> None:
    assert len(digit_windows(text)) == windows


FRAGMENTS = [
    "hello ",
    "jane@example.com ",
    "+44 20 7946 0958 ",
    "(415) 555-2671 ",
    "4111 1111 1111 1111 ",
    "DE89 3704 0044 0532 0130 00 ",
    "GB82WEST12345698765432 ",
    "order 123456789 ",
    "2024-05-01 ",
    "café ",
    "ünïcødé – “quotes” ",  # noqa: RUF001 (non-ASCII on purpose)
    "x" * 60 + " ",
    "12 34 ",
    "- ",
    "(",
    "+",
    "0",
    "\n",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12))
def test_content_scan_finds_what_the_detectors_find_on_the_whole_text(parts: list[str]) -> None:
    # The digit-window shortcut must never miss what a full scan finds (residency depends on it).
    text = "".join(parts)
    scan = ContentScan(text)
    for kind, detect in DETECTORS.items():
        assert scan.finds(kind) == detect(text), (kind, text)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("x" * 5000 + " jane@example.com", "email"),
        ("y " * 3000 + "4111 1111 1111 1111", "card"),
        ("z" * 7000 + " +44 20 7946 0958", "phone"),
        ("w " * 2500 + "DE89 3704 0044 0532 0130 00", "iban"),
    ],
)
def test_detectors_read_the_whole_prompt_not_a_window(text: str, kind: str) -> None:
    assert ContentScan(text).finds(kind)
