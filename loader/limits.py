"""DynamoDB's rules for one item: its size, the numbers it may hold, its key sizes, its write units.

Each rule is written here once. ``loader.schema`` applies them a row at a time and
``loader.blocks`` a column at a time (the ``*_sizes`` functions); ``tests/unit/test_limits.py``
pins every rule in one table of examples, run through every path that computes it.

Sizes (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html):
an item's size is the sum, over its attributes, of the UTF-8 bytes of the attribute's name and the
size of its value:

==========  ===========================================================================
S           its UTF-8 bytes (``utf8_size``); the empty string is 0
B           its raw bytes (base64-decoded)
N           ``number_size``: 1 for zero, else 1 per base-100 digit + 1, and 1 more if negative
BOOL, NULL  1 (``BOOL_BYTES``, ``NULL_BYTES``)
L           3 (``CONTAINER_BYTES``) + for each element 1 (``ELEMENT_BYTES``) + its size
M           3 + for each member 1 + the UTF-8 bytes of its name + its size
SS, NS, BS  the sum of the elements' sizes
==========  ===========================================================================

Numbers: AWS documents a number's size as "approximately (1 byte per two significant digits) +
(1 byte)". The rule here is the one DynamoDB applies (checked byte for byte against DynamoDB Local
at the 400 KB boundary): leading and trailing zeros are dropped and the significant digits are
paired from the decimal point (base-100 digits), so ``12`` is one pair but ``1.5`` is two
(``01|50``) and ``123`` two (``01|23``); a negative number takes one byte more. It never
under-counts: a negative 38-digit number may count 22 where DynamoDB says 21.

Limits (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Constraints.html): an
item is at most 400 KB by these rules; a partition key value at most 2048 bytes and a sort key
value at most 1024; a number has at most 38 significant digits and is zero or of magnitude
1E-130 .. 9.9999999999999999999999999999999999999E+125; lists and maps nest at most 32 levels,
the item being the first. A write costs one write unit per started KB of the item, at least one.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable
from itertools import repeat
from operator import add, itemgetter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loader.models import Entry

__all__ = [
    "BOOL_BYTES",
    "CONTAINER_BYTES",
    "ELEMENT_BYTES",
    "MAX_ITEM_BYTES",
    "MAX_NESTING",
    "MAX_NUMBER_DIGITS",
    "MAX_NUMBER_EXPONENT",
    "MAX_PARTITION_KEY_BYTES",
    "MAX_SORT_KEY_BYTES",
    "MIN_NUMBER_EXPONENT",
    "NULL_BYTES",
    "WRITE_UNIT_BYTES",
    "decimal_sizes",
    "integer_set_size",
    "integer_size",
    "integer_sizes",
    "number_parts",
    "number_size",
    "parts_size",
    "plain_integers",
    "total_write_units",
    "utf8_size",
    "utf8_sizes",
    "write_units",
]

#: An item is at most 400 KB, by the size rules above (names + values); the limit is inclusive.
MAX_ITEM_BYTES = 400 * 1024
#: A partition key value is at most 2048 bytes (UTF-8 for S, raw for B), inclusive.
MAX_PARTITION_KEY_BYTES = 2048
#: A sort key value is at most 1024 bytes, inclusive.
MAX_SORT_KEY_BYTES = 1024
#: A number has at most 38 significant digits.
MAX_NUMBER_DIGITS = 38
#: A number other than zero has its first significant digit at 10**-130 .. 10**125 (the
#: "adjusted exponent": 1E-130 .. 9.99..9E+125).
MIN_NUMBER_EXPONENT = -130
MAX_NUMBER_EXPONENT = 125
#: Lists and maps nested inside one attribute: DynamoDB's 32 levels, the item being the first
#: (DynamoDB Local refuses a 32nd nested list).
MAX_NESTING = 31
#: One write unit per started KB.
WRITE_UNIT_BYTES = 1024
BOOL_BYTES = 1
NULL_BYTES = 1
#: A list or map's own bytes, and each element's (a map member's name counts besides).
CONTAINER_BYTES = 3
ELEMENT_BYTES = 1

_ZERO = "0"
_NUMBER_RE = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]{1,9}))?")
_NOT_A_NUMBER = "is not a number"
_OUT_OF_RANGE = (
    "is outside DynamoDB's number range (magnitude 1E-130 .. 9.9999999999999999999999999999999999999E+125)"
)


# ----------------------------------------------------------------------------- strings


def utf8_size(text: str) -> int:
    """The UTF-8 bytes of ``text`` (UnicodeEncodeError for a lone surrogate)."""
    return len(text) if text.isascii() else len(text.encode())


def utf8_sizes(texts: list[str]) -> list[int]:
    """``utf8_size`` of each text, in C-level maps."""
    if "".join(texts).isascii():
        return list(map(len, texts))
    return list(map(len, map(str.encode, texts)))  # UnicodeEncodeError for a lone surrogate


# ----------------------------------------------------------------------------- numbers


def number_parts(text: str) -> tuple[bool, str, int]:
    """``(negative, significant digits, adjusted exponent)`` of a number DynamoDB takes.

    ``text`` is already stripped: an optional sign, ASCII digits with at most one point, an
    optional exponent. Zero is ``(False, "", 0)``. The adjusted exponent is the power of ten of
    the first significant digit. ValueError, with the reason as its message ("is not a number",
    "has 39 significant digits; ...", "is outside DynamoDB's number range ..."), for anything else.
    """
    m = _NUMBER_RE.fullmatch(text)
    if m is None:
        raise ValueError(_NOT_A_NUMBER)
    sign, whole, fraction, exponent = m.groups()
    if fraction is None:
        fraction = ""
    if not whole and not fraction:
        raise ValueError(_NOT_A_NUMBER)
    digits = (whole + fraction).lstrip(_ZERO)
    if not digits:
        return False, "", 0
    significant = digits.rstrip(_ZERO)
    if len(significant) > MAX_NUMBER_DIGITS:
        raise ValueError(
            f"has {len(significant)} significant digits; DynamoDB allows at most {MAX_NUMBER_DIGITS}"
        )
    adjusted = len(digits) - 1 - len(fraction) + (int(exponent) if exponent else 0)
    if not MIN_NUMBER_EXPONENT <= adjusted <= MAX_NUMBER_EXPONENT:
        raise ValueError(_OUT_OF_RANGE)
    return sign == "-", significant, adjusted


def parts_size(negative: bool, significant: str, adjusted: int) -> int:
    """The size of the number ``number_parts`` gave these parts for: 1 for zero, else its base-100
    digits (the pairs are aligned on the decimal point, so an even exponent starts a lone digit)
    + 1, + 1 if negative."""
    if not significant:
        return 1
    return (len(significant) + (adjusted & 1 == 0) + 1) // 2 + 1 + negative


def number_size(text: str) -> int:
    """The size of a number given as stripped, non-empty text; ValueError (see ``number_parts``)
    if DynamoDB refuses it. ``parts_size(*number_parts(text))``, with plain decimals ("19.99",
    "-0.5", "42") sized without the regex or a call (it runs for every N cell)."""
    body = text[1:] if text[0] in "+-" else text
    plain = body.replace(".", "", 1)
    if plain.isdigit() and plain.isascii() and len(plain) <= MAX_NUMBER_DIGITS:
        digits = plain.lstrip("0")
        if not digits:
            return 1
        point = body.find(".")
        adjusted = len(digits) - 1 - (len(plain) - (point if point >= 0 else len(body)))
        return (len(digits.rstrip("0")) + (adjusted & 1 == 0) + 1) // 2 + 1 + (text[0] == "-")
    return parts_size(*number_parts(text))


def integer_size(text: str) -> int:
    """The size of an integer written as an optional ``-`` and ASCII digits, non-empty (leading
    zeros allowed; at most 38 significant digits, not checked)."""
    digits = text.lstrip("-0")
    if not digits:
        return 1
    # the first digit is at 10**(len - 1): an odd length is an even exponent, so the pairs are
    # (significant + odd length + 1) // 2, and + 1 is folded into the + 3
    return (len(digits.rstrip("0")) + (len(digits) & 1) + 3) // 2 + (text[0] == "-")


def integer_set_size(digits: Iterable[str]) -> int:
    """The size of a number set of non-negative integers, given as their digits without leading
    zeros (``""`` for zero): the sum of ``integer_size`` of each, in one loop (zero's 1 is
    ``(0 + 0 + 3) // 2``)."""
    size = 0
    for d in digits:
        size += (len(d.rstrip("0")) + (len(d) & 1) + 3) // 2
    return size


def integer_sizes(digits: list[str]) -> list[int]:
    """``integer_size`` of non-negative integers given as their digits without leading zeros
    (``""`` for zero), one ``map`` at a time: ``(significant + odd length + 3) // 2``, and zero's 1
    is ``(0 + 0 + 3) // 2``."""
    significant = map(len, map(str.rstrip, digits, repeat(_ZERO)))
    odd = map(operator.and_, map(len, digits), repeat(1))
    return list(map(operator.floordiv, map(add, map(add, significant, odd), repeat(3)), repeat(2)))


def plain_integers(texts: list[str]) -> bool:
    """Every text is ASCII digits only, at most 38 of them: a non-negative integer whose size
    ``integer_sizes`` gives once its leading zeros are stripped."""
    joined = "".join(texts)
    return joined.isdigit() and joined.isascii() and max(map(len, texts)) <= MAX_NUMBER_DIGITS


def decimal_sizes(texts: list[str]) -> list[int] | None:
    """``number_size`` of plain unsigned decimals (``12``, ``0.5``, ``99022.77``, at most 38
    digits), one ``map`` at a time; None when a text is anything else.

    The adjusted exponent is even exactly when the digits after the leading zeros plus the
    fraction digits are odd in number; zero is 1 byte.
    """
    if "." not in "".join(texts):
        return integer_sizes(list(map(str.lstrip, texts, repeat(_ZERO)))) if plain_integers(texts) else None
    parts = list(map(str.partition, texts, repeat(".")))
    fractions = list(map(itemgetter(2), parts))
    plain = list(map(add, map(itemgetter(0), parts), fractions))
    joined = "".join(plain)
    if not (joined.isdigit() and joined.isascii()) or "" in plain or max(map(len, plain)) > MAX_NUMBER_DIGITS:
        return None
    digits = list(map(str.lstrip, plain, repeat(_ZERO)))
    lengths = list(map(len, digits))
    odd = map(operator.and_, map(add, lengths, map(len, fractions)), repeat(1))
    even = map(operator.and_, odd, map(bool, lengths))  # 0 for zero
    significant = map(len, map(str.rstrip, digits, repeat(_ZERO)))
    return list(map(operator.floordiv, map(add, map(add, significant, even), repeat(3)), repeat(2)))


# ----------------------------------------------------------------------------- write units


def write_units(size: int) -> int:
    """Write units for one item of ``size`` bytes: one per started KB, at least 1."""
    return max(1, (size + WRITE_UNIT_BYTES - 1) // WRITE_UNIT_BYTES)


_SIZE = operator.attrgetter("size")


def total_write_units(entries: Iterable[Entry]) -> int:
    """``write_units`` summed over entries, in C-level maps (it runs once per batch)."""
    started = map(add, map(_SIZE, entries), repeat(WRITE_UNIT_BYTES - 1))
    return sum(map(max, map(operator.floordiv, started, repeat(WRITE_UNIT_BYTES)), repeat(1)))
