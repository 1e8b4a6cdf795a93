"""docs/asyncapi.json is generated from the models; this fails when they drift apart."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.mqtt.asyncapi import document
from protocols.events import EventType

DOC = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.json"


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
