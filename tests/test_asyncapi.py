"""docs/asyncapi.json: generated from the models (this fails when they drift apart), valid
AsyncAPI (the AsyncAPI project's own parser, from npm), and forward compatible: every
payload the gateway publishes validates against it, and so does the same payload with a
field a later release might add."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from gateway.mqtt.asyncapi import document
from protocols.events import (
    EVENT_MODELS,
    AccessDecisionEvent,
    AlarmEvent,
    BatteryEvent,
    Channel,
    ClockUntrustedEvent,
    CommandResultEvent,
    DeviceOnlineEvent,
    DoorLeftOpenEvent,
    EventBody,
    EventType,
    GatewayEvent,
    HealthEvent,
    JournalRecoveredEvent,
    JournalRestartEvent,
    KeyNotReturnedEvent,
    KeysafeStateEvent,
    LateAnswerEvent,
    LockState,
    LockStateEvent,
    PairingEvent,
    RelockEvent,
    RepublishedEvent,
    RevocationAppliedEvent,
    RosterAppliedEvent,
    RosterOverLimitEvent,
    RosterPerson,
    SiteKeyCreatedEvent,
    StateFallbackEvent,
    SuspiciousEvent,
    VisitEvent,
)
from protocols.health import HealthReason
from protocols.mqtt import DeviceAvailability, DeviceStatePayload, GatewayStatus

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "asyncapi.json"
PARSER = ROOT / "tests" / "asyncapi"

#: one body of every event model, as the gateway builds them
BODIES: list[EventBody] = [
    AccessDecisionEvent(type="access.granted", door="front", device="front-lock", iss="org",
                        sub="c-1", role="verzorgende", purpose="planned", action="unlock",
                        token_id="9f", channel=Channel.PHONE, reason="ok"),
    SuspiciousEvent(door="front", count=5, window=300),
    # a flood on the phone link, and malformed attempts aggregated per source (issue 17)
    SuspiciousEvent(door=None, count=412, window=60, source="127.0.0.1"),
    PairingEvent(type="device.pairing_unknown", device="front-lock", door="front",
                 key_id="9a8b7c6d5e4f3a2b"),
    AccessDecisionEvent(type="access.denied", door="unknown", action="unknown", channel=Channel.PHONE,
                        reason="malformed", count=9999, source="127.0.0.1"),
    LockStateEvent(device="front-lock", door="front", lock=LockState.LOCKED),
    KeysafeStateEvent(device="front-keysafe", door="front", compartment="closed", key="present"),
    KeyNotReturnedEvent(device="front-keysafe", door="front", opened_at="2026-01-01T07:00:00.000Z",
                        minutes=30),
    DoorLeftOpenEvent(device="front-lock", door="front", opened_at="2026-01-01T07:00:00.000Z",
                      seconds=300),
    BatteryEvent(device="front-lock", door="front", level=9, low=True, critical=True, days_left=3.5),
    DeviceOnlineEvent(type="device.offline", device="front-lock", door="front", reason="link lost"),
    CommandResultEvent(request_id="r-1", cmd="unlock", ok=True, reason="ok", actor="alarm"),
    VisitEvent(type="visit.ended", visit="0190", door="front", duration_s=61.5,
               problems=["left_unlocked"]),
    AlarmEvent(type="alarm.raised", actor="alarmcentrale", request_id="r-2"),
    RevocationAppliedEvent(iss="org", list_seq=4, cti_count=1, sub_count=0),
    RepublishedEvent(type="revocation.republished", iss="org", list_seq=4,
                     topic="lockgw/v1/org/org/revocations", found="older", found_seq=2),
    RosterAppliedEvent(iss="org", list_seq=2, people=1,
                       added=[RosterPerson(sub="c-1", role="verzorgende")]),
    RosterOverLimitEvent(people=6, limit=5),
    ClockUntrustedEvent(now="2020-01-01T00:00:00.000Z", floor="2026-01-01T00:00:00.000Z",
                        detail="behind the time floor"),
    StateFallbackEvent(file="revocations.json", problem="damaged", issuers=["org"],
                       fallback="planned care of org is refused until its list arrives again",
                       kept_as="/var/lib/lockgw/access/revocations.json.corrupt"),
    GatewayEvent(type="gateway.started", version="0.1.0"),
    JournalRecoveredEvent(
        since="2026-01-01T00:00:00.000Z", until="2026-01-01T00:05:00.000Z", events=12,
        first_seq=40, last_seq=51, problem="the disk is full", not_durable=0, lost=0,
    ),
    SiteKeyCreatedEvent(key="sign", algorithm="Ed25519", kid="00112233aabbccdd",
                        public="11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
    HealthEvent(type="health.warning", code="consent.ending", level="warning",
                text="consent: the resident's consent for Thuiszorg West ends on ...",
                subject="org-west"),
    HealthEvent(type="health.cleared", code="device.offline", level="unhealthy",
                text="device front-lock (front): offline", subject="front-lock"),
    JournalRestartEvent(type="journal.damaged", problem="its hash chain is broken at seq 101",
                        kept_as="/var/lib/lockgw/journal.sqlite3.damaged-20260101T000000Z",
                        last_seq=300, link_seq=100, link_hash="00" * 32, link_from="journal"),
    LateAnswerEvent(door="front", device="front-lock", action="unlock", attempt="0190",
                    lock="unlocked", iss="org", sub="c-1"),
    RelockEvent(type="door.left_unlocked", door="front", device="front-lock", why="not_opened",
                attempt="0191", detail="the lock did not answer", actor="alarm", request_id="r-3"),
]


def test_the_committed_asyncapi_document_matches_the_code() -> None:
    committed = json.loads(DOC.read_text(encoding="utf-8"))
    assert committed == document(), (
        "docs/asyncapi.json is out of date: run "
        "`.venv/bin/python -m gateway.mqtt.asyncapi > docs/asyncapi.json` and commit it"
    )


def test_every_event_type_and_topic_is_documented() -> None:
    doc = document()
    assert doc["asyncapi"].startswith("3.")
    events = doc["channels"]["events"]["messages"]
    assert {name.removeprefix("event.") for name in events} == {t.value for t in EventType}
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {
        "lockgw/v1/{site}/status",
        "lockgw/v1/{site}/events",
        "lockgw/v1/{site}/devices/{device}/state",
        "lockgw/v1/{site}/devices/{device}/availability",
        "lockgw/v1/{site}/inventory",
        "lockgw/v1/{site}/commands",
        "lockgw/v1/{site}/credentials",
        "lockgw/v1/org/{issuer}/revocations",
        "lockgw/v1/org/{issuer}/rosters/{site}",
    }
    for msg in doc["components"]["messages"].values():  # every $ref resolves
        ref = msg["payload"].get("$ref") or msg["payload"].get("items", {}).get("$ref")
        if ref:
            assert ref.split("/")[-1] in doc["components"]["schemas"]


def _validator(schema_name: str) -> Draft7Validator:
    """A JSON Schema validator of one component schema, its $refs resolved in the document
    (AsyncAPI 3's default schema format is a superset of draft 7)."""
    doc = json.loads(DOC.read_text(encoding="utf-8"))
    schema = {**doc["components"]["schemas"][schema_name], "components": doc["components"]}
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def _wire(body: EventBody, seq: int = 1) -> dict[str, Any]:
    from gateway.journal._chain import uuid7, wire_payload

    raw = wire_payload(uuid7(), seq, "2026-01-01T00:00:00.000Z", '"site-1"', body.model_dump_json())
    out: dict[str, Any] = json.loads(raw)
    return out


def test_every_event_the_gateway_publishes_validates_and_so_does_one_with_a_new_field() -> None:
    assert {type(b) for b in BODIES} == set(EVENT_MODELS)
    for body in BODIES:
        check = _validator(type(body).__name__)
        wire = _wire(body)
        assert not list(check.iter_errors(wire)), (body.type, list(check.iter_errors(wire)))
        # a later release within v 1 adds a field: a strict consumer still accepts it
        newer = {**wire, "added_in_a_later_release": {"any": ["json", 1]}}
        for nested in ("added", "removed", "changed"):  # objects inside may grow too
            if wire.get(nested):
                newer[nested] = [{**p, "name_hint": "x"} for p in wire[nested]]
        assert not list(check.iter_errors(newer)), body.type


def test_the_schemas_still_refuse_what_is_wrong() -> None:
    """The check is not vacuous: a missing field, a wrong type or value still fails."""
    check = _validator("LockStateEvent")
    wire = _wire(LockStateEvent(device="front-lock", door="front", lock=LockState.LOCKED))
    for broken in (
        {k: v for k, v in wire.items() if k != "seq"},
        {**wire, "seq": "4711"},
        {**wire, "lock": "wide open"},
        {**wire, "v": 2},
    ):
        assert list(check.iter_errors(broken)), broken


def test_the_retained_payloads_validate_with_new_fields_too() -> None:
    samples = {
        "GatewayStatus": GatewayStatus(state="online", version="1", started_at="2026-01-01T00:00:00Z"),
        "GatewayStatus with health": GatewayStatus(
            state="online", version="1", started_at="2026-01-01T00:00:00Z", health="degraded",
            reasons=[HealthReason(code="revocation.stale", level="degraded", subject="org",
                                  text="revocations: the list of org is 3 h old")],
        ),
        "DeviceStatePayload": DeviceStatePayload(kind="lock", lock=LockState.JAMMED,
                                                 problems=["lock_jammed"]),
        "DeviceAvailability": DeviceAvailability(state="offline", reason="link lost"),
    }
    for name, model in samples.items():
        check = _validator(name.split()[0])
        data = model.model_dump(mode="json")
        assert not list(check.iter_errors(data)), name
        assert not list(check.iter_errors({**data, "since": "2027-01-01"})), name


def _asyncapi_parser() -> Path:
    """The AsyncAPI parser (npm @asyncapi/parser, pinned by tests/asyncapi/package-lock.json),
    installed once per lock file into a cache outside the repository."""
    npm = shutil.which("npm")
    assert npm, "npm (Node.js 20) is needed to run the AsyncAPI parser"
    lock = (PARSER / "package-lock.json").read_bytes()
    where = Path.home() / ".cache" / "lockgw-test" / f"asyncapi-{hashlib.sha256(lock).hexdigest()[:12]}"
    if not (where / ".complete").exists():
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        for name in ("package.json", "package-lock.json", "validate.mjs"):
            shutil.copy(PARSER / name, where / name)
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--silent"],
            cwd=where, check=True, timeout=600,
        )
        (where / ".complete").write_text("ok")
    shutil.copy(PARSER / "validate.mjs", where / "validate.mjs")
    return where


def _parse(where: Path, *docs: Path) -> dict[str, dict[str, Any]]:
    """{file: {"valid": bool, "diagnostics": [...]}} from the AsyncAPI parser."""
    node = shutil.which("node")
    assert node
    proc = subprocess.run(
        [node, str(where / "validate.mjs"), *map(str, docs)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return {r["file"]: r for r in map(json.loads, proc.stdout.splitlines())}


@pytest.mark.slow
@pytest.mark.timeout(600)  # the first run on a machine installs the parser (~30 s)
def test_the_asyncapi_parser_accepts_the_document_and_refuses_a_broken_one(
    tmp_path: Path,
) -> None:
    where = _asyncapi_parser()
    broken = json.loads(DOC.read_text(encoding="utf-8"))
    del broken["components"]["messages"]["status"]  # a channel now points at nothing
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    results = _parse(where, DOC, tmp_path / "broken.json")
    ours = results[str(DOC)]
    assert ours["valid"], ours["diagnostics"]
    assert not [d for d in ours["diagnostics"] if d["severity"] <= 1], ours["diagnostics"]
    refused = results[str(tmp_path / "broken.json")]
    assert not refused["valid"] and "status" in json.dumps(refused["diagnostics"])


def test_a_published_event_validates_against_its_schema_fields() -> None:
    from gateway.journal import envelope_from_wire
    from gateway.journal._chain import uuid7, wire_payload
    from protocols.events import LockState, LockStateEvent

    body = LockStateEvent(device="front-lock", door="front", lock=LockState.LOCKED)
    wire = json.loads(
        wire_payload(uuid7(), 1, "2026-01-01T00:00:00.000Z", '"s"', body.model_dump_json())
    )
    schema = document()["components"]["schemas"]["LockStateEvent"]
    assert set(schema["required"]) <= set(wire) <= set(schema["properties"])
    assert envelope_from_wire(wire).body == body
