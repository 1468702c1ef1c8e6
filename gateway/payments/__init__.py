"""Payments: the domain of payment intents, attempts and refunds.

Pure, I/O-free rules (state machine, idempotency, money, decline mapping) and
the store interface they are persisted through. The design and its contracts
are in ``gateway/payments/DESIGN.md``.
"""
