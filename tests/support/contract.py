"""The wire contract as docs/asyncapi.yaml writes it down: schemas, and validators for them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from gateway.domain.personal import SEALED_FIELDS, open_event
from gateway.domain.sealed_box import OpeningKey
from tests.support import REPO

DOC_PATH = REPO / "docs" / "asyncapi.yaml"
DOC_URI = "urn:rentgate:test:asyncapi"
DOCUMENT: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
SCHEMAS: dict[str, Any] = DOCUMENT["components"]["schemas"]
REGISTRY: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(DOCUMENT))


def refs(node: Any) -> Iterator[str]:
    """Every `$ref` value anywhere under `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(ref: str) -> Any:
    """What a document-local `$ref` points at, looked up through the registry."""
    return REGISTRY.resolver(base_uri=DOC_URI).lookup(ref).contents


def deref(node: Any) -> Any:
    """Follow `$ref`s until a node that is not a bare reference."""
    while isinstance(node, dict) and set(node) == {"$ref"}:
        node = resolve(node["$ref"])
    return node


def validator(schema_ref: str) -> Draft202012Validator:
    """A validator for a `#/components/schemas/...` schema, with the document as registry."""
    return Draft202012Validator(
        {"$ref": DOC_URI + schema_ref},
        registry=REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def payload_ref(channel: str) -> str:
    """The payload schema ref of the one message a channel carries, as the document says."""
    messages = DOCUMENT["channels"][channel]["messages"]
    assert len(messages) == 1, f"channel {channel} carries one message"
    (message,) = (deref(m) for m in messages.values())
    ref: str = message["payload"]["$ref"]
    assert ref.startswith("#/components/schemas/")
    return ref


def assert_valid(check: Draft202012Validator, instance: Any, what: str) -> None:
    errors = sorted(check.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        details = "\n".join(f"  at {list(e.absolute_path)}: {e.message}" for e in errors)
        pytest.fail(f"{what} does not match the contract:\n{details}\n{json.dumps(instance)}")


def opened(events: list[dict[str, Any]], gw: str, keys: list[OpeningKey]) -> list[dict[str, Any]]:
    """Events as the platform reads them: each sealed box opened with `keys` (SealError if one
    will not) and what it held checked against the contract's CapturedPersonalFields."""
    inside = validator("#/components/schemas/CapturedPersonalFields")
    result = []
    for event in events:
        clear = open_event(keys, gw, event)
        if "sealed" in event:
            personal = {key: clear[key] for key in SEALED_FIELDS[event["type"]]}
            assert_valid(inside, personal, f"the box of {event['type']} seq {event.get('seq')}")
        result.append(clear)
    return result
