"""Realistic sample messages in the network dialect: an e-commerce 0100 with
chip data (field 55) and its 0110. Used by the demo, the benchmark and tests.

The card is netsim's approving test card, never a real one.
"""

from __future__ import annotations

# A Visa contact-chip ARQC: 22 tags, 140 bytes.
ICC_DATA = (
    "9F2608C3A0F4D2B1E7A9659F2701809F100706010A03A0A000"
    "9F3704A1B2C3D49F360200319505000000800"
    "09A032611229C01005F2A0209789F02060000000019999F03060000000000008202"
    "19809F1A0202769F3303E0F8C89F34034203009F3501229F1E0831323334353637"
    "388407A00000000310109F090200969F410400001234"
    "5F3401019F530152"
)


def auth_request() -> dict[str, str]:
    """A realistic authorization request (MTI 0100) with 20 data fields."""
    return {
        "t": "0100",
        "2": "4242424242424242",
        "3": "000000",
        "4": "000000001999",
        "7": "1122193012",
        "11": "000123",
        "12": "193012",
        "13": "1122",
        "14": "2812",
        "18": "5999",
        "22": "812",
        "23": "001",
        "25": "59",
        "32": "440001",
        "37": "633219000123",
        "41": "TERM0001",
        "42": "MERCHANT0000001",
        "43": "PAYGATE DEMO STORE      BERLIN       DEU",
        "49": "978",
        "55": ICC_DATA,
        "60": "ECOM",
    }


def auth_response() -> dict[str, str]:
    """The issuer's approval (MTI 0110) for :func:`auth_request`."""
    return {
        "t": "0110",
        "2": "4242424242424242",
        "3": "000000",
        "4": "000000001999",
        "7": "1122193013",
        "11": "000123",
        "12": "193012",
        "13": "1122",
        "32": "440001",
        "37": "633219000123",
        "38": "A1B2C3",
        "39": "00",
        "41": "TERM0001",
        "42": "MERCHANT0000001",
        "49": "978",
        "55": "910A1A2B3C4D5E6F70800000",
    }
