"""The AsyncAPI 3 document of every lockgw topic and payload, generated from the pydantic models.

``python -m gateway.mqtt.asyncapi > docs/asyncapi.json``. ``tests/test_asyncapi.py``
fails when the committed document and the code drift apart, validates real payloads
against it and runs the AsyncAPI parser (npm ``@asyncapi/parser``) over it.

Forward compatible: within ``v: 1`` new fields may be added to any payload
(docs/platform.md), so every published schema says ``additionalProperties: true`` —
also where the gateway's own models forbid unknown fields, which only guards the
producer against its own typos. A consumer that validates strictly keeps working when a
release adds a field.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from protocols.events import EVENT_MODELS
from protocols.mqtt import DeviceAvailability, DeviceStatePayload, GatewayStatus, InventoryItem

__all__ = ["document"]

_REF = "#/components/schemas/{model}"

_ENVELOPE: dict[str, Any] = {
    "v": {"const": 1, "description": "envelope version"},
    "id": {
        "type": "string",
        "format": "uuid",
        "description": "UUIDv7; a consumer drops a repeated id (at-least-once delivery)",
    },
    "seq": {
        "type": "integer",
        "minimum": 1,
        "description": "per site, from 1, strictly increasing with no gaps, surviving restarts: "
        "a gap means loss",
    },
    "ts": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 UTC with milliseconds, e.g. 2026-11-23T08:14:03.412Z",
    },
    "site": {"type": "string", "description": "the site id"},
}

_COSE = {
    "type": "string",
    "format": "binary",
    "contentMediaType": "application/cose; cose-type=cose-sign1",
}

_QOS1 = {"mqtt": {"qos": 1, "retain": False, "bindingVersion": "0.2.0"}}
_QOS1_RETAINED = {"mqtt": {"qos": 1, "retain": True, "bindingVersion": "0.2.0"}}
_SITE_PARAM = {"site": {"description": "the site id (random; carries no address)"}}
_DEVICE_PARAM = {"description": "the device id from the config"}


def _event_types(model: type[Any]) -> list[str]:
    ann = model.model_fields["type"].annotation
    return list(getattr(ann, "__args__", ()))


def _schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        *EVENT_MODELS,
        GatewayStatus,
        DeviceStatePayload,
        DeviceAvailability,
        InventoryItem,
    ]
    mode: JsonSchemaMode = "serialization"
    _, top = models_json_schema([(m, mode) for m in models], ref_template=_REF)
    schemas: dict[str, Any] = dict(sorted(top.get("$defs", {}).items()))
    for model in EVENT_MODELS:  # the wire form is flat: envelope fields beside the body's
        body = schemas[model.__name__]
        body["properties"] = {**_ENVELOPE, **body["properties"]}
        required = [r for r in body.get("required", []) if r != "type"]
        body["required"] = ["v", "id", "seq", "ts", "site", "type", *required]
    for schema in schemas.values():  # new fields within v 1 must not break a consumer
        if schema.get("type") == "object":
            schema["additionalProperties"] = True
    return schemas


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document, as a JSON-ready dict (deterministic)."""
    schemas = _schemas()
    messages: dict[str, Any] = {}
    event_refs: dict[str, Any] = {}
    for model in EVENT_MODELS:
        for etype in _event_types(model):
            name = "event." + etype
            messages[name] = {
                "name": etype,
                "title": etype,
                "contentType": "application/json",
                "payload": {"$ref": _REF.format(model=model.__name__)},
            }
            event_refs[name] = {"$ref": f"#/components/messages/{name}"}
    messages.update(
        {
            "status": {
                "contentType": "application/json",
                "payload": {"$ref": _REF.format(model="GatewayStatus")},
            },
            "deviceState": {
                "contentType": "application/json",
                "payload": {"$ref": _REF.format(model="DeviceStatePayload")},
            },
            "deviceAvailability": {
                "contentType": "application/json",
                "payload": {"$ref": _REF.format(model="DeviceAvailability")},
            },
            "inventory": {
                "contentType": "application/json",
                "payload": {"type": "array", "items": {"$ref": _REF.format(model="InventoryItem")}},
            },
            "command": {
                "contentType": "application/cose",
                "summary": "a signed command (CONTRACT §5): COSE_Sign1, EdDSA, signed by a "
                "configured command signer; CBOR map {cmd, site, door, request_id, exp, actor, "
                "reason}. Answered on events with command.result.",
                "payload": _COSE,
            },
            "credential": {
                "contentType": "application/cose",
                "summary": "a credential token (CONTRACT §2) for the gateway to hold, so a "
                "phone can present it by its cti",
                "payload": _COSE,
            },
            "revocationList": {
                "contentType": "application/cose",
                "summary": "a signed revocation list (CONTRACT §5), retained, one per issuer: "
                "CBOR map {iss, seq, iat, cti, sub}; a list whose seq is not higher than the "
                "one held is ignored. Applied lists are reported as revocation.applied. When "
                "something else replaces the retained copy (an older list, another issuer's, "
                "bytes that do not verify, an empty message), a gateway holding a newer list "
                "publishes the issuer's signed bytes of it back, retained and unchanged "
                "(revocation.republished).",
                "payload": _COSE,
            },
            "roster": {
                "contentType": "application/cose",
                "summary": "an issuer's signed roster for one site (an addition to CONTRACT §5), "
                "retained: COSE_Sign1, EdDSA, signed by that issuer; CBOR map {iss, site, seq, "
                "iat, entries: [{sub, ?cti, name, role, purpose, doors, ?win, ?nbf, ?exp}]} — who "
                "the organisation authorises here and the name the resident sees. It replaces "
                "the issuer's previous roster when its seq is higher (rollback refused); a "
                "roster for another site is refused. Applied rosters are reported as "
                "roster.applied (who was added, who removed). A replaced retained copy is put "
                "back by the gateway as for revocation lists (roster.republished).",
                "payload": _COSE,
            },
        }
    )

    def channel(address: str, msgs: dict[str, Any], desc: str, params: Any = None) -> Any:
        out: dict[str, Any] = {"address": address, "description": desc, "messages": msgs}
        if params is not None:
            out["parameters"] = params
        return out

    def ref(name: str) -> dict[str, Any]:
        return {name: {"$ref": f"#/components/messages/{name}"}}

    channels = {
        "status": channel(
            "lockgw/v1/{site}/status",
            ref("status"),
            "online/offline (retained); offline is the Last Will",
            _SITE_PARAM,
        ),
        "events": channel(
            "lockgw/v1/{site}/events",
            event_refs,
            "every event of the site, one stream in seq order (QoS 1, at least once)",
            _SITE_PARAM,
        ),
        "deviceState": channel(
            "lockgw/v1/{site}/devices/{device}/state",
            ref("deviceState"),
            "latest state of one device and its current problems (retained; every configured "
            "device from the gateway's first connect on)",
            {**_SITE_PARAM, "device": _DEVICE_PARAM},
        ),
        "deviceAvailability": channel(
            "lockgw/v1/{site}/devices/{device}/availability",
            ref("deviceAvailability"),
            "whether the gateway reaches one device (retained; every configured device from "
            "the gateway's first connect on); meaningful while status is online",
            {**_SITE_PARAM, "device": _DEVICE_PARAM},
        ),
        "inventory": channel(
            "lockgw/v1/{site}/inventory",
            ref("inventory"),
            "the installed base (retained)",
            _SITE_PARAM,
        ),
        "commands": channel(
            "lockgw/v1/{site}/commands",
            ref("command"),
            "signed commands to the gateway",
            _SITE_PARAM,
        ),
        "credentials": channel(
            "lockgw/v1/{site}/credentials",
            ref("credential"),
            "tokens for the gateway to hold",
            _SITE_PARAM,
        ),
        "revocations": channel(
            "lockgw/v1/org/{issuer}/revocations",
            ref("revocationList"),
            "an issuer's signed revocation list (retained)",
            {"issuer": {"description": "the issuer (care organisation) id"}},
        ),
        "rosters": channel(
            "lockgw/v1/org/{issuer}/rosters/{site}",
            ref("roster"),
            "an issuer's signed roster for one site (retained): who may enter",
            {
                "issuer": {"description": "the issuer (care organisation) id"},
                **_SITE_PARAM,
            },
        ),
    }

    def op(action: str, ch: str, bindings: Any, summary: str) -> Any:
        return {
            "action": action,
            "channel": {"$ref": f"#/channels/{ch}"},
            "summary": summary,
            "bindings": bindings,
        }

    operations = {
        "sendStatus": op("send", "status", _QOS1_RETAINED, "the gateway says whether it is online"),
        "sendEvents": op(
            "send",
            "events",
            _QOS1,
            "every event; removed from the gateway's outbox only after the broker's PUBACK",
        ),
        "sendDeviceState": op(
            "send", "deviceState", _QOS1_RETAINED, "on connect, and when a device changed"
        ),
        "sendDeviceAvailability": op(
            "send",
            "deviceAvailability",
            _QOS1_RETAINED,
            "on connect, and when a device went online or offline",
        ),
        "sendInventory": op("send", "inventory", _QOS1_RETAINED, "the installed base changed"),
        "receiveCommands": op("receive", "commands", _QOS1, "verified before anything happens"),
        "receiveCredentials": op("receive", "credentials", _QOS1, "held for phones"),
        "receiveRevocations": op(
            "receive", "revocations", _QOS1_RETAINED, "applied when newer; rollback refused"
        ),
        "sendRevocations": op(
            "send",
            "revocations",
            _QOS1_RETAINED,
            "the newest list held, the issuer's signed bytes unchanged, put back when the "
            "retained copy was replaced by an older or unusable one",
        ),
        "receiveRosters": op(
            "receive", "rosters", _QOS1_RETAINED, "verified, applied when newer; rollback refused"
        ),
        "sendRosters": op(
            "send",
            "rosters",
            _QOS1_RETAINED,
            "the newest roster held, signed bytes unchanged, put back like revocation lists",
        ),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "lockgw gateway",
            "version": "1.0.0",
            "description": "What a lockgw door-access gateway publishes and accepts over MQTT "
            "(topic root lockgw/v1/). Generated from the pydantic models by "
            "`python -m gateway.mqtt.asyncapi`; see docs/platform.md. Within v 1 any payload "
            "may gain fields: consumers ignore fields they do not know (every schema allows "
            "additional properties).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {
                "host": "broker.example.org:8883",
                "protocol": "mqtts",
                "protocolVersion": "5",
                "description": "MQTT 5 (3.1.1 accepted), TLS with client certificates",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def main() -> int:
    sys.stdout.write(json.dumps(document(), indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
