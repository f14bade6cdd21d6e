"""The coordinator, as neutron-server sees it: gRPC calls with messages built from the contract's descriptors.

neutron-server's environment carries its own protobuf and grpcio (Debian bookworm: protobuf 4.21, grpcio
1.51), which cannot load the stubs isthmus generates for its own protobuf. Instead the message classes
are built at start from ``isthmus/v1/contract.binpb``, the FileDescriptorSet of the .proto files (the
same in every protobuf release), and each call goes through grpcio's generic channel methods. Requests
and answers are plain dicts with the .proto's field names.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import threading
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

PACKAGE = "isthmus.v1"
ON_BEHALF_OF = "x-isthmus-on-behalf-of"  # who asked Neutron: recorded in the coordinator's audit
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000)]


class CoordinatorError(Exception):
    """A call the coordinator refused or could not answer: ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def load_contract(data: bytes | None = None) -> descriptor_pool.DescriptorPool:
    """A descriptor pool holding the isthmus contract (the packaged descriptor set, or ``data``)."""
    if data is None:
        data = importlib.resources.files(PACKAGE).joinpath("contract.binpb").read_bytes()
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(proto)
    return pool


def _message_class(pool: descriptor_pool.DescriptorPool, name: str) -> Any:
    descriptor = pool.FindMessageTypeByName(name)
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get_class is not None:
        return get_class(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)


def to_dict(message: Any) -> dict[str, Any]:
    """A message as a dict with the .proto's field names, unset scalars included (any protobuf release)."""
    try:
        out: dict[str, Any] = json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    except TypeError:  # protobuf < 5 names the option differently
        out = json_format.MessageToDict(
            message, preserving_proto_field_name=True, including_default_value_fields=True)
    return out


@dataclasses.dataclass(frozen=True)
class Settings:
    """How to reach the coordinator (neutron.conf ``[isthmus]``)."""

    address: str                 # HOST:PORT or unix:PATH
    ca_file: str = ""            # with cert_file and key_file: mutual TLS
    cert_file: str = ""
    key_file: str = ""
    token_file: str = ""         # a bearer token instead of (or as well as) a certificate
    timeout: float = 10.0


class Coordinator:
    """Unary calls to the coordinator's services; thread-safe, one channel per process."""

    def __init__(self, settings: Settings, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self.settings = settings
        self.pool = pool or load_contract()
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._calls: dict[str, Any] = {}

    def _open(self) -> grpc.Channel:
        s = self.settings
        if s.ca_file:
            def read(path: str) -> bytes | None:
                if not path:
                    return None
                with open(path, "rb") as f:
                    return f.read()
            creds = grpc.ssl_channel_credentials(read(s.ca_file), read(s.key_file), read(s.cert_file))
            return grpc.secure_channel(s.address, creds, options=CHANNEL_OPTIONS)
        return grpc.insecure_channel(s.address, options=CHANNEL_OPTIONS)

    def _call(self, service: str, method: str) -> tuple[Any, Any]:
        path = f"/{PACKAGE}.{service}/{method}"
        with self._lock:
            if self._channel is None:
                self._channel = self._open()
            if path not in self._calls:
                svc = self.pool.FindServiceByName(f"{PACKAGE}.{service}")
                m = svc.FindMethodByName(method)
                if m is None:
                    raise CoordinatorError("UNIMPLEMENTED", f"{service} has no method {method}")
                request_cls = _message_class(self.pool, m.input_type.full_name)
                response_cls = _message_class(self.pool, m.output_type.full_name)
                self._calls[path] = (request_cls, self._channel.unary_unary(
                    path, request_serializer=lambda msg: msg.SerializeToString(),
                    response_deserializer=response_cls.FromString))
            return self._calls[path]

    def _metadata(self, on_behalf_of: str) -> list[tuple[str, str]]:
        md = []
        if self.settings.token_file:
            with open(self.settings.token_file, encoding="utf-8") as f:
                md.append(("authorization", f"Bearer {f.read().strip()}"))
        if on_behalf_of:
            md.append((ON_BEHALF_OF, on_behalf_of[:256]))
        return md

    def call(self, service: str, method: str, request: dict[str, Any] | None = None, *,
             on_behalf_of: str = "") -> dict[str, Any]:
        """Call ``service.method`` with ``request`` (a dict); the answer as a dict (defaults included)."""
        request_cls, stub = self._call(service, method)
        try:
            message = json_format.ParseDict(request or {}, request_cls(), ignore_unknown_fields=False)
        except json_format.ParseError as exc:
            raise CoordinatorError("INVALID_ARGUMENT", str(exc)) from None
        try:
            answer = stub(message, timeout=self.settings.timeout, metadata=self._metadata(on_behalf_of))
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() is not None else "UNKNOWN"
            if code in ("UNAVAILABLE", "UNKNOWN", "DEADLINE_EXCEEDED"):
                # The next call dials afresh instead of waiting out the channel's reconnect backoff: a
                # coordinator that is back answers Neutron's next request.
                self.close()
            raise CoordinatorError(code, exc.details() or "") from None
        return to_dict(answer)

    def call_all(self, service: str, method: str, key: str, request: dict[str, Any] | None = None, *,
                 on_behalf_of: str = "") -> list[dict[str, Any]]:
        """Every item (under ``key``) of a paged list call, following next_page_token."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            answer = self.call(service, method, {**(request or {}), "page_token": token}, on_behalf_of=on_behalf_of)
            items += answer.get(key, [])
            token = answer.get("next_page_token", "")
            if not token:
                return items

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
                self._calls.clear()
