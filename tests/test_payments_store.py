"""The payments store on SQLite: atomic changes under an optimistic version check,
every field round-tripped, cursor pagination, idempotency records and the
hash-chained events written under group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.payments.audit import GENESIS, chain_hash, verify
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    CaptureMethod,
    Change,
    Event,
    IntentStatus,
    PaymentError,
    PaymentIntent,
    Refund,
    RefundStatus,
)
from gateway.payments.sqlite_store import SqlitePaymentStore
from gateway.payments.store import (
    DuplicateId,
    EventRow,
    IdempotencyRecord,
    InvalidCursor,
    VersionConflict,
)
from gateway.store.sqlite import SqliteDatabase


class Env:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = SqliteDatabase(path)
        self.store = SqlitePaymentStore(self.db)

    def count(self, table: str) -> int:
        conn = sqlite3.connect(self.path)
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()

    def events(self) -> list[EventRow]:
        return asyncio.run(self.store.events_after(0, limit=100_000))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    built = Env(tmp_path / "paygate.db")
    yield built
    built.store.close()
    built.db.close()


def intent(n: int, *, merchant: str = "acme", created: int = 1_000, version: int = 1,
           status: IntentStatus = IntentStatus.REQUIRES_PAYMENT_METHOD) -> PaymentIntent:
    return PaymentIntent(id=f"pi_{n:024d}", merchant_id=merchant, amount=1000 + n,
                         currency="eur", capture_method=CaptureMethod.AUTOMATIC, status=status,
                         created=created, updated=created, version=version)


def attempt(n: int, intent_id: str, *, kind: AttemptKind = AttemptKind.AUTHORIZATION,
            status: AttemptStatus = AttemptStatus.RECORDED, created: int = 2_000) -> Attempt:
    return Attempt(id=f"att_{n:024d}", intent_id=intent_id, kind=kind, status=status,
                   amount=1500, currency="eur", stan=f"{n:06d}", rrn=f"{n:012d}",
                   transmitted="0102030405", terminal_id="TERM0001", created=created,
                   updated=created)


def event(kind: str, aggregate_id: str, created: int = 1_000, **payload: object) -> Event:
    aggregate = "attempt" if kind.startswith("attempt.") else kind.split(".", maxsplit=1)[0]
    return Event(kind, aggregate, aggregate_id, dict(payload), created)


def create(n: int) -> Change:
    new = intent(n)
    return Change(new, None, events=(event("payment_intent.created", new.id, new.created,
                                           amount=new.amount, currency=new.currency),))


def test_commit_of_a_new_intent_writes_the_row_and_chained_events(env: Env) -> None:
    """A new intent is stored, its events get seq 1 and 2, chained from the genesis hash."""
    new = intent(1)
    change = Change(new, None, events=(event("payment_intent.created", new.id, amount=1001),
                                       event("payment_intent.processing", new.id)))
    assert asyncio.run(env.store.commit(change)) == 2
    assert asyncio.run(env.store.get_intent(new.id)) == new
    first, second = env.events()
    assert (first.seq, first.prev_hash, second.seq, second.prev_hash) == (1, GENESIS, 2, first.hash)
    assert first.payload == {"amount": 1001} and first.aggregate_type == "payment_intent"
    assert first.hash == chain_hash(GENESIS, 1, "payment_intent.created", "payment_intent",
                                    new.id, '{"amount":1001}', 1_000)
    assert asyncio.run(env.store.last_event()) == second


def test_update_with_the_right_version_replaces_the_intent(env: Env) -> None:
    """An update decided on the stored version is written, with its attempt and event."""
    asyncio.run(env.store.commit(create(1)))
    moved = replace(intent(1), status=IntentStatus.PROCESSING, version=2, updated=1_500)
    auth = attempt(1, moved.id)
    seq = asyncio.run(env.store.commit(Change(moved, 1, attempts=(auth,), events=(
        event("payment_intent.processing", moved.id), event("attempt.recorded", auth.id)))))
    assert seq == 3
    assert asyncio.run(env.store.get_intent(moved.id)) == moved
    assert asyncio.run(env.store.attempts_for_intent(moved.id)) == [auth]


def test_a_stale_version_raises_and_writes_nothing_of_the_change(env: Env) -> None:
    """A change decided on version 1 after version 2 was stored is refused whole: the
    intent, attempts, refunds and events are as before."""
    asyncio.run(env.store.commit(create(1)))
    v2 = replace(intent(1), status=IntentStatus.CANCELED, version=2)
    asyncio.run(env.store.commit(Change(v2, 1, events=(event("payment_intent.canceled", v2.id),))))
    stale = replace(intent(1), status=IntentStatus.PROCESSING, version=2)
    refund = Refund("re_1", stale.id, 5, "eur", RefundStatus.PENDING, 3_000, 3_000)
    with pytest.raises(VersionConflict) as raised:
        asyncio.run(env.store.commit(Change(
            stale, 1, attempts=(attempt(1, stale.id),), refunds=(refund,),
            events=(event("payment_intent.processing", stale.id),))))
    assert (raised.value.expected, raised.value.actual) == (1, 2)
    assert asyncio.run(env.store.get_intent(v2.id)) == v2
    assert env.count("attempts") == 0 and env.count("refunds") == 0
    assert [e.type for e in env.events()] == ["payment_intent.created", "payment_intent.canceled"]


def test_updating_an_unknown_intent_is_a_version_conflict(env: Env) -> None:
    """An update of an intent that was never stored raises with no stored version."""
    ghost = replace(intent(9), version=2)
    with pytest.raises(VersionConflict) as raised:
        asyncio.run(env.store.commit(Change(ghost, 1)))
    assert raised.value.actual is None and env.count("payment_intents") == 0


def test_a_new_version_that_is_not_expected_plus_one_is_refused(env: Env) -> None:
    """The store refuses a change whose intent version does not follow the expected one."""
    asyncio.run(env.store.commit(create(1)))
    with pytest.raises(ValueError, match="version must be 2"):
        asyncio.run(env.store.commit(Change(replace(intent(1), version=5), 1)))
    assert asyncio.run(env.store.get_intent(intent(1).id)) == intent(1)


def test_a_failing_event_insert_leaves_no_half_written_change(env: Env) -> None:
    """When the second event's insert fails, the intent, attempt and first event are rolled
    back, and the next change chains from the genesis hash as if nothing happened."""
    env.db.write_sync(lambda conn: conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.type = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END"))
    new = intent(1)
    with pytest.raises(sqlite3.IntegrityError, match="boom"):
        asyncio.run(env.store.commit(Change(new, None, attempts=(attempt(1, new.id),), events=(
            event("payment_intent.created", new.id), Event("boom", "x", "y", {}, 1)))))
    assert asyncio.run(env.store.get_intent(new.id)) is None
    assert asyncio.run(env.store.get_attempt(attempt(1, new.id).id)) is None
    assert env.count("events") == 0
    assert asyncio.run(env.store.commit(create(2))) == 1
    assert env.events()[0].prev_hash == GENESIS and verify(env.events()).ok


def test_duplicate_ids_are_refused_without_writing(env: Env) -> None:
    """A second insert of an intent id, or an attempt id owned by another intent, raises
    DuplicateId and leaves the stored rows and events alone."""
    asyncio.run(env.store.commit(create(1)))
    with pytest.raises(DuplicateId):
        asyncio.run(env.store.commit(create(1)))
    asyncio.run(env.store.commit(Change(replace(intent(1), version=2), 1,
                                        attempts=(attempt(7, intent(1).id),))))
    other = intent(2)
    with pytest.raises(DuplicateId):
        asyncio.run(env.store.commit(Change(other, None, attempts=(attempt(7, other.id),),
                                            events=(event("payment_intent.created", other.id),))))
    assert asyncio.run(env.store.get_intent(other.id)) is None
    kept = asyncio.run(env.store.get_attempt(attempt(7, "").id))
    assert kept is not None and kept.intent_id == intent(1).id
    assert env.count("events") == 1


def test_an_attempts_recorded_facts_never_change_only_its_outcome_does(env: Env) -> None:
    """A later change may set an attempt's status, outcome fields and request; one that
    gives a recorded attempt another STAN or amount is refused as DuplicateId and
    writes nothing."""
    asyncio.run(env.store.commit(create(1)))
    recorded = attempt(7, intent(1).id)
    asyncio.run(env.store.commit(Change(replace(intent(1), version=2), 1,
                                        attempts=(recorded,))))
    approved = replace(recorded, status=AttemptStatus.APPROVED, updated=recorded.updated + 5,
                       approved_amount=recorded.amount, response_code="00",
                       approval_code="A1B2C3", request={"39": "00"})
    asyncio.run(env.store.commit(Change(replace(intent(1), version=3), 2,
                                        attempts=(approved,))))
    assert asyncio.run(env.store.get_attempt(recorded.id)) == approved
    for changed in (replace(approved, stan="999999"), replace(approved, amount=1)):
        with pytest.raises(DuplicateId):
            asyncio.run(env.store.commit(Change(replace(intent(1), version=4), 3,
                                                attempts=(changed,))))
    assert asyncio.run(env.store.get_attempt(recorded.id)) == approved
    stored = asyncio.run(env.store.get_intent(intent(1).id))
    assert stored is not None and stored.version == 3


def test_every_field_round_trips(env: Env) -> None:
    """Intent, attempt and refund come back equal, with enums as enums, JSON columns as
    dicts and money as INTEGER columns."""
    full = PaymentIntent(
        id="pi_full", merchant_id="acme", amount=123_456_789_012, currency="jpy",
        capture_method=CaptureMethod.MANUAL, status=IntentStatus.REQUIRES_CAPTURE,
        created=1_700_000_000_000, updated=1_700_000_000_500, description="Crème brûlée x2",
        metadata={"order": "42", "ключ": "значение", "empty": ""}, amount_capturable=100,
        amount_received=7, amount_refunded=3, payment_method="9999000011114242",
        last_payment_error=PaymentError("card_declined", "insufficient_funds", "Nope", "51"),
        cancellation_reason="duplicate", version=1)
    auth = replace(attempt(1, full.id, status=AttemptStatus.APPROVED), approved_amount=90,
                   response_code="10", approval_code="A1B2C3", original_attempt_id="att_x",
                   refund_id="re_x", request={"3": "000000", "4": "000000000100", "49": "392"})
    refund = Refund("re_full", full.id, 5, "jpy", RefundStatus.FAILED, 5, 6, "requested", "att_r")
    asyncio.run(env.store.commit(Change(full, None, attempts=(auth,), refunds=(refund,))))
    got = asyncio.run(env.store.get_intent(full.id))
    assert got == full and got is not None
    assert type(got.status) is IntentStatus and type(got.capture_method) is CaptureMethod
    got_auth = asyncio.run(env.store.get_attempt(auth.id))
    assert got_auth == auth and got_auth is not None and type(got_auth.kind) is AttemptKind
    assert asyncio.run(env.store.get_refund(refund.id)) == refund
    assert asyncio.run(env.store.refunds_for_intent(full.id)) == [refund]
    assert asyncio.run(env.store.commit(Change(replace(full, last_payment_error=None,
                                                       version=2), 1))) == 0
    cleared = asyncio.run(env.store.get_intent(full.id))
    assert cleared is not None and cleared.last_payment_error is None
    conn = sqlite3.connect(env.path)
    types = conn.execute("SELECT typeof(amount), typeof(amount_received), typeof(metadata) "
                         "FROM payment_intents").fetchone()
    conn.close()
    assert types == ("integer", "integer", "text")


def test_a_float_amount_is_refused_before_anything_is_written(env: Env) -> None:
    """Money must be an int: a float amount raises TypeError and stores nothing."""
    with pytest.raises(TypeError, match="amount must be an int"):
        asyncio.run(env.store.commit(Change(replace(intent(1), amount=10.5), None)))  # type: ignore[arg-type]
    assert env.count("payment_intents") == 0


def _all_pages(env: Env, merchant: str, limit: int, **filters: object,
               ) -> tuple[list[str], list[bool]]:
    ids: list[str] = []
    flags: list[bool] = []
    after: str | None = None
    while True:
        page, more = asyncio.run(env.store.list_intents(merchant, limit=limit, after=after,
                                                        **filters))  # type: ignore[arg-type]
        ids += [p.id for p in page]
        flags.append(more)
        if not more:
            return ids, flags
        after = page[-1].id


def test_list_pages_newest_first_without_gaps_or_duplicates(env: Env) -> None:
    """Paging by cursor (with ties on created) visits every matching intent of the merchant
    once, newest first, with has_more true on every page but the last."""
    statuses = [IntentStatus.REQUIRES_PAYMENT_METHOD, IntentStatus.CANCELED]
    stored = [intent(n, created=1_000 + n // 3, status=statuses[n % 2]) for n in range(25)]
    stored += [intent(100 + n, merchant="other", created=1_000 + n) for n in range(5)]

    async def load() -> None:
        await asyncio.gather(*(env.store.commit(Change(p, None)) for p in stored))
    asyncio.run(load())
    acme = sorted((p for p in stored if p.merchant_id == "acme"),
                  key=lambda p: (p.created, p.id), reverse=True)
    ids, flags = _all_pages(env, "acme", 4)
    assert ids == [p.id for p in acme] and flags == [True] * 6 + [False]
    ids, flags = _all_pages(env, "acme", 5)          # 25 = 5 full pages: no empty 6th page
    assert ids == [p.id for p in acme] and flags == [True] * 4 + [False]
    ids, _ = _all_pages(env, "acme", 3, status=IntentStatus.CANCELED, created_gte=1_002,
                        created_lt=1_007)
    assert ids == [p.id for p in acme if p.status is IntentStatus.CANCELED
                   and 1_002 <= p.created < 1_007]
    assert len(ids) == 7
    with pytest.raises(InvalidCursor):
        asyncio.run(env.store.list_intents("acme", after=stored[-1].id))


def test_attempts_with_status_filters_by_status_and_kind_oldest_first(env: Env) -> None:
    """The reconciler's query returns attempts in that status (and kind), oldest first,
    and sees an attempt upserted to a new status."""
    parent = intent(1)
    tries = (attempt(1, parent.id, status=AttemptStatus.UNKNOWN, created=30),
             attempt(2, parent.id, kind=AttemptKind.CAPTURE, status=AttemptStatus.UNKNOWN,
                     created=10),
             attempt(3, parent.id, status=AttemptStatus.APPROVED, created=20),
             attempt(4, parent.id, status=AttemptStatus.UNKNOWN, created=40))
    asyncio.run(env.store.commit(Change(parent, None, attempts=tries)))
    unknown = asyncio.run(env.store.attempts_with_status(AttemptStatus.UNKNOWN))
    assert [a.id for a in unknown] == [tries[1].id, tries[0].id, tries[3].id]
    auths = asyncio.run(env.store.attempts_with_status(AttemptStatus.UNKNOWN,
                                                       AttemptKind.AUTHORIZATION, limit=1))
    assert [a.id for a in auths] == [tries[0].id]
    reversed_ = replace(tries[0], status=AttemptStatus.REVERSED, updated=99)
    asyncio.run(env.store.commit(Change(replace(parent, version=2), 1, attempts=(reversed_,))))
    unknown = asyncio.run(env.store.attempts_with_status(AttemptStatus.UNKNOWN))
    assert [a.id for a in unknown] == [tries[1].id, tries[3].id]
    assert asyncio.run(env.store.attempts_for_intent(parent.id)) == [
        tries[1], tries[2], reversed_, tries[3]]


def test_refunds_are_upserted_and_listed_per_intent(env: Env) -> None:
    """Refunds come back by id and per intent in creation order; an upsert changes status."""
    parent = intent(1, status=IntentStatus.SUCCEEDED)
    first = Refund("re_1", parent.id, 100, "eur", RefundStatus.PENDING, 10, 10)
    second = Refund("re_2", parent.id, 50, "eur", RefundStatus.PENDING, 20, 20, "duplicate")
    asyncio.run(env.store.commit(Change(parent, None, refunds=(second, first))))
    done = replace(first, status=RefundStatus.SUCCEEDED, updated=30, attempt_id="att_9")
    asyncio.run(env.store.commit(Change(replace(parent, version=2), 1, refunds=(done,))))
    assert asyncio.run(env.store.refunds_for_intent(parent.id)) == [done, second]
    assert asyncio.run(env.store.get_refund("re_2")) == second
    assert asyncio.run(env.store.get_refund("re_404")) is None
    assert asyncio.run(env.store.refunds_for_intent("pi_none")) == []


def claim(key: str, created: int, fingerprint: str = "f1") -> IdempotencyRecord:
    return IdempotencyRecord(scope="acme", key=key, fingerprint=fingerprint, state="in_progress",
                             response=b"", code=0, details=b"", created=created,
                             expires=created + 86_400_000)


def test_idempotency_claim_complete_and_replay(env: Env) -> None:
    """The first claim wins; a second sees it in progress, then done with the stored
    response, code and details to replay."""
    store = env.store
    assert asyncio.run(store.claim_idempotency(claim("k1", 1_000))) is None
    seen = asyncio.run(store.claim_idempotency(claim("k1", 2_000, "f2")))
    assert seen is not None and seen.state == "in_progress" and seen.fingerprint == "f1"
    assert asyncio.run(store.complete_idempotency("acme", "k1", b"\x08\x01resp", 0, b"\x00"))
    assert not asyncio.run(store.complete_idempotency("acme", "k1", b"other", 0, b""))
    replay = asyncio.run(store.claim_idempotency(claim("k1", 3_000)))
    assert replay == IdempotencyRecord("acme", "k1", "f1", "done", b"\x08\x01resp", 0, b"\x00",
                                       1_000, 1_000 + 86_400_000)
    assert asyncio.run(store.claim_idempotency(
        replace(claim("k1", 3_000), scope="other"))) is None


def test_an_expired_idempotency_record_is_replaced(env: Env) -> None:
    """A claim made at or after a record's expiry replaces it as a fresh in_progress claim."""
    store = env.store
    asyncio.run(store.claim_idempotency(claim("k1", 1_000)))
    asyncio.run(store.complete_idempotency("acme", "k1", b"old", 0, b""))
    later = claim("k1", 1_000 + 86_400_000, "f2")
    assert asyncio.run(store.claim_idempotency(later)) is None
    again = asyncio.run(store.claim_idempotency(claim("k1", later.created + 1)))
    assert again == later


def test_release_and_purge_idempotency(env: Env) -> None:
    """Releasing deletes only an in_progress claim; purging deletes only expired records."""
    store = env.store
    asyncio.run(store.claim_idempotency(claim("k1", 1_000)))
    assert asyncio.run(store.release_idempotency("acme", "k1"))
    assert asyncio.run(store.claim_idempotency(claim("k1", 1_001))) is None
    asyncio.run(store.complete_idempotency("acme", "k1", b"r", 0, b""))
    assert not asyncio.run(store.release_idempotency("acme", "k1"))
    asyncio.run(store.claim_idempotency(claim("k2", 5_000_000)))
    assert asyncio.run(store.purge_idempotency(1_001 + 86_400_000)) == 1
    assert env.count("idempotency_keys") == 1
    assert asyncio.run(store.claim_idempotency(claim("k2", 5_000_001))) is not None


def test_concurrent_commits_group_commit_into_a_gap_free_valid_chain(env: Env) -> None:
    """200 commits started together all land, share fewer fsyncs than jobs, and leave
    events numbered 1..400 whose chain verifies."""
    changes = [Change(intent(n), None, events=(
        event("payment_intent.created", intent(n).id, n=n),
        event("payment_intent.processing", intent(n).id, n=n))) for n in range(200)]

    async def run() -> list[int]:
        return await asyncio.gather(*(env.store.commit(c) for c in changes))
    seqs = asyncio.run(run())
    assert sorted(seqs) == list(range(2, 401, 2))
    rows = env.events()
    assert [r.seq for r in rows] == list(range(1, 401))
    assert verify(rows).ok and verify(rows).checked == 400
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        assert first.aggregate_id == second.aggregate_id    # one change's events are adjacent
    assert env.count("payment_intents") == 200
    assert env.db.commits < env.db.jobs_committed


def test_concurrent_updates_of_one_intent_let_exactly_one_win(env: Env) -> None:
    """Of 20 updates decided on the same version, one is written and 19 conflict; the
    losers' events are not in the chain."""
    asyncio.run(env.store.commit(create(1)))

    async def run() -> list[int | BaseException]:
        return await asyncio.gather(*(env.store.commit(Change(
            replace(intent(1), description=f"d{n}", version=2), 1,
            events=(event("payment_intent.processing", intent(1).id, n=n),)))
            for n in range(20)), return_exceptions=True)
    results = asyncio.run(run())
    assert sum(isinstance(r, VersionConflict) for r in results) == 19
    assert [r for r in results if not isinstance(r, BaseException)] == [2]
    rows = env.events()
    assert len(rows) == 2 and verify(rows).ok
    stored = asyncio.run(env.store.get_intent(intent(1).id))
    assert stored is not None and stored.description == f"d{rows[1].payload['n']}"


def test_events_of_types_reads_a_window_and_loads_only_the_wanted_types(env: Env) -> None:
    """A window of 10 events returns those of the wanted types in seq order and the seq
    of the window's last event, so a consumer skips the rest without loading them."""
    for n in range(12):
        change = create(n)
        if n % 3 == 0:
            change = Change(change.intent, None, events=(
                *change.events, event("payment_intent.processing", change.intent.id)))
        asyncio.run(env.store.commit(change))
    # seqs: 1 created, 2 processing, 3..4 created, 5 created, 6 processing, ... (16 events)
    rows, last = asyncio.run(env.store.events_of_types(0, 10, ["payment_intent.processing"]))
    assert last == 10
    assert [r.seq for r in rows] == [2, 6, 10]
    assert all(r.type == "payment_intent.processing" for r in rows)
    rows, last = asyncio.run(env.store.events_of_types(10, 10, ["payment_intent.processing"]))
    assert ([r.seq for r in rows], last) == ([14], 16)
    assert asyncio.run(env.store.events_of_types(16, 10, ["payment_intent.processing"])) == \
        ([], 16)
    rows, last = asyncio.run(env.store.events_of_types(0, 100, ["no.such.type"]))
    assert (rows, last) == ([], 16)


def test_events_after_pages_in_seq_order(env: Env) -> None:
    """Paging events_after by the last seq returns every event once, in order."""
    assert asyncio.run(env.store.last_event()) is None
    assert asyncio.run(env.store.events_after(0)) == []
    for n in range(25):
        asyncio.run(env.store.commit(create(n)))
    seen: list[int] = []
    pages: list[int] = []
    cursor = 0
    while page := asyncio.run(env.store.events_after(cursor, limit=10)):
        pages.append(len(page))
        seen += [r.seq for r in page]
        cursor = page[-1].seq
    assert pages == [10, 10, 5] and seen == list(range(1, 26))
    last = asyncio.run(env.store.last_event())
    assert last is not None and last.seq == 25 and last.aggregate_id == intent(24).id
