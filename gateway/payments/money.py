"""Money: the ISO 4217 currencies the gateway accepts, and amount validation.

An amount is an ``int`` of minor units (cents, yen, fils) with a lower-case ISO
4217 ``currency``. Each currency has its ISO numeric code (field 49 of a network
message), its minor-unit exponent, and a maximum amount in minor units.

The table lists the circulating ISO 4217 currencies (list one, as published by
SIX); fund codes (``clf``, ``usn``, ...), precious metals, ``xdr`` and the test
codes are left out: no card is charged in them. Whether a merchant may charge in
a given currency (sanctions, acquirer contracts) is decided elsewhere.

The maximum is a sanity ceiling, not an FX quote: ``999,999.99`` major units by
default, raised for currencies whose unit is worth little (so that the ceiling
stays in the region of USD 100k to 1M), and never above field 4's twelve digits
(``999999999999``). Pure data, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.payments.errors import DomainError

__all__ = [
    "CURRENCIES",
    "FIELD4_MAX",
    "Currency",
    "by_numeric",
    "currency",
    "exponent",
    "max_amount",
    "numeric_code",
    "validate_amount",
    "validate_currency",
]

#: Field 4 (amount, transaction) is n12.
FIELD4_MAX: Final = 999_999_999_999


@dataclass(frozen=True, slots=True)
class Currency:
    """One ISO 4217 currency as the gateway uses it."""

    code: str        # lower-case alphabetic code, e.g. "eur"
    numeric: str     # three-digit numeric code (field 49), e.g. "978"
    exponent: int    # minor-unit exponent: 0 (jpy), 2 (eur), 3 (kwd)
    max_amount: int  # largest accepted amount, in minor units


# code numeric exponent digits: "digits" is the number of major-unit digits of the
# ceiling (6 -> 999,999 major units + the minor digits).
_TABLE: Final = """
aed 784 2 6
afn 971 2 7
all 008 2 7
amd 051 2 8
aoa 973 2 9
ars 032 2 9
aud 036 2 6
awg 533 2 6
azn 944 2 6
bam 977 2 6
bbd 052 2 6
bdt 050 2 8
bgn 975 2 6
bhd 048 3 6
bif 108 0 9
bmd 060 2 6
bnd 096 2 6
bob 068 2 7
brl 986 2 7
bsd 044 2 6
btn 064 2 8
bwp 072 2 7
byn 933 2 6
bzd 084 2 6
cad 124 2 6
cdf 976 2 9
chf 756 2 6
clp 152 0 9
cny 156 2 7
cop 170 2 9
crc 188 2 8
cup 192 2 7
cve 132 2 7
czk 203 2 7
djf 262 0 8
dkk 208 2 7
dop 214 2 7
dzd 012 2 8
egp 818 2 8
ern 232 2 7
etb 230 2 8
eur 978 2 6
fjd 242 2 6
fkp 238 2 6
gbp 826 2 6
gel 981 2 6
ghs 936 2 7
gip 292 2 6
gmd 270 2 7
gnf 324 0 10
gtq 320 2 7
gyd 328 2 8
hkd 344 2 7
hnl 340 2 7
htg 332 2 8
huf 348 2 8
idr 360 2 10
ils 376 2 6
inr 356 2 8
iqd 368 3 9
irr 364 2 10
isk 352 0 8
jmd 388 2 8
jod 400 3 6
jpy 392 0 8
kes 404 2 8
kgs 417 2 8
khr 116 2 9
kmf 174 0 8
kpw 408 2 9
krw 410 0 9
kwd 414 3 6
kyd 136 2 6
kzt 398 2 8
lak 418 2 10
lbp 422 2 10
lkr 144 2 8
lrd 430 2 8
lsl 426 2 7
lyd 434 3 6
mad 504 2 7
mdl 498 2 7
mga 969 2 9
mkd 807 2 7
mmk 104 2 9
mnt 496 2 9
mop 446 2 7
mru 929 2 7
mur 480 2 7
mvr 462 2 7
mwk 454 2 9
mxn 484 2 7
myr 458 2 6
mzn 943 2 7
nad 516 2 7
ngn 566 2 9
nio 558 2 7
nok 578 2 7
npr 524 2 8
nzd 554 2 6
omr 512 3 6
pab 590 2 6
pen 604 2 6
pgk 598 2 6
php 608 2 8
pkr 586 2 8
pln 985 2 6
pyg 600 0 10
qar 634 2 6
ron 946 2 6
rsd 941 2 8
rub 643 2 8
rwf 646 0 9
sar 682 2 6
sbd 090 2 7
scr 690 2 7
sdg 938 2 8
sek 752 2 7
sgd 702 2 6
shp 654 2 6
sle 925 2 7
sos 706 2 8
srd 968 2 7
ssp 728 2 9
stn 930 2 7
svc 222 2 7
syp 760 2 10
szl 748 2 7
thb 764 2 7
tjs 972 2 7
tmt 934 2 6
tnd 788 3 6
top 776 2 6
try 949 2 7
ttd 780 2 7
twd 901 2 7
tzs 834 2 9
uah 980 2 7
ugx 800 0 9
usd 840 2 6
uyu 858 2 7
uzs 860 2 10
ved 926 2 7
ves 928 2 7
vnd 704 0 10
vuv 548 0 8
wst 882 2 6
xaf 950 0 9
xcd 951 2 6
xcg 532 2 6
xof 952 0 9
xpf 953 0 8
yer 886 2 8
zar 710 2 7
zmw 967 2 7
zwg 924 2 7
"""


def _load(table: str) -> dict[str, Currency]:
    out: dict[str, Currency] = {}
    for line in table.strip().splitlines():
        code, numeric, exp, digits = line.split()
        ceiling = 10 ** (int(digits) + int(exp)) - 1
        if code in out or ceiling > FIELD4_MAX:
            raise ValueError(f"bad currency table row: {line!r}")
        out[code] = Currency(code, numeric, int(exp), ceiling)
    return out


#: Every accepted currency by lower-case code.
CURRENCIES: Final[Mapping[str, Currency]] = MappingProxyType(_load(_TABLE))
_BY_NUMERIC: Final[Mapping[str, Currency]] = MappingProxyType(
    {c.numeric: c for c in CURRENCIES.values()})


def currency(code: object) -> Currency:
    """The currency ``code`` names (lower-case, three letters), or INVALID_ARGUMENT
    ``currency_invalid``."""
    found = CURRENCIES.get(code) if isinstance(code, str) else None
    if found is None:
        raise DomainError("INVALID_ARGUMENT", "currency_invalid",
                          "currency must be a supported lower-case ISO 4217 code")
    return found


def validate_currency(code: object) -> None:
    """Raise INVALID_ARGUMENT ``currency_invalid`` unless ``code`` is a supported currency."""
    currency(code)


def exponent(code: str) -> int:
    """The minor-unit exponent of ``code`` (0 for jpy, 2 for eur, 3 for kwd)."""
    return currency(code).exponent


def numeric_code(code: str) -> str:
    """The ISO 4217 numeric code of ``code``, as field 49 carries it (eur -> "978")."""
    return currency(code).numeric


def max_amount(code: str) -> int:
    """The largest accepted amount in ``code``, in minor units."""
    return currency(code).max_amount


def by_numeric(numeric: str) -> Currency:
    """The currency a field 49 value names ("978" -> eur), or INVALID_ARGUMENT
    ``currency_invalid``."""
    found = _BY_NUMERIC.get(numeric)
    if found is None:
        raise DomainError("INVALID_ARGUMENT", "currency_invalid",
                          "not a supported ISO 4217 numeric currency code")
    return found


def validate_amount(amount: object, code: object) -> None:
    """Check that ``amount`` (minor units) can be charged in currency ``code``.

    Raises INVALID_ARGUMENT ``currency_invalid`` for an unknown or not lower-case
    code, and ``amount_invalid`` unless ``amount`` is an ``int`` (not a ``bool``)
    in ``1..max_amount(code)``.
    """
    cur = currency(code)
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise DomainError("INVALID_ARGUMENT", "amount_invalid",
                          "amount must be a positive integer number of minor units",
                          {"currency": cur.code})
    if amount > cur.max_amount:
        raise DomainError("INVALID_ARGUMENT", "amount_invalid",
                          "amount is above the maximum for this currency",
                          {"currency": cur.code, "max_amount": str(cur.max_amount)})
