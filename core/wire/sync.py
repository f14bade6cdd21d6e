"""The wire form of the sync contract (sync.proto): protobuf <-> the sync model.

Through the field-for-field JSON form that etcd also stores.
"""

from __future__ import annotations

from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from isthmus.core import model as m
from isthmus.core.sync import (
    ImageInfo,
    SyncIntent,
    SyncStatus,
    SyncTask,
    image_info_from_json,
    intent_from_json,
    status_from_json,
    task_from_json,
)

T = TypeVar("T")


def _clean(obj: Any) -> Any:
    """JSON form without empty values (the protobuf JSON parser wants no nulls)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if v is not None and v != "" and v != [] and v != {}}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def to_pb(obj: Any, message: T) -> T:
    """Fill ``message`` (a fresh protobuf message) from a sync dataclass."""
    assert isinstance(message, Message)
    json_format.ParseDict(_clean(m.to_json(obj)), message, ignore_unknown_fields=False)
    if isinstance(obj, SyncIntent):
        message.version = obj.version
    return message


def from_pb(message: Message) -> dict[str, Any]:
    """The JSON form of a protobuf message, field names as in the .proto."""
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def intent_from_pb(message: Message) -> SyncIntent:
    d = from_pb(message)
    return intent_from_json(d, int(d.get("version", 0)))


def status_from_pb(message: Message) -> SyncStatus:
    d = from_pb(message)
    for k in ("updated_unix_ms", "bytes_done", "bytes_total", "action_unix_ms"):
        if k in d:
            d[k] = int(d[k])
    return status_from_json(d)


def image_info_from_pb(message: Message) -> ImageInfo:
    d = from_pb(message)
    if "size" in d:
        d["size"] = int(d["size"])
    info = image_info_from_json(d)
    assert info is not None
    return info


def task_from_pb(message: Message) -> SyncTask:
    d = from_pb(message)
    if d.get("source_image") and "size" in d["source_image"]:
        d["source_image"]["size"] = int(d["source_image"]["size"])
    return task_from_json(d)


# ---------------------------------------------------------------- validation
