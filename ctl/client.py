"""The session of one isthmusctl command: where it connects, the stubs it calls, how it prints, how it fails."""

from __future__ import annotations

import json
from argparse import Namespace
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import Message

from isthmus.ctl.render import describe_rpc_error, format_table, message_json
from isthmus.v1 import admin_pb2_grpc, api_pb2, api_pb2_grpc, l2gw_pb2, l2gw_pb2_grpc

ENV_COORDINATOR = "ISTHMUS_COORDINATOR"
ENV_TOKEN = "ISTHMUS_TOKEN"
ENV_ADMIN_SOCKET = "ISTHMUS_ADMIN_SOCKET"
DEFAULT_COORDINATOR = "127.0.0.1:7800"
DEFAULT_ADMIN_SOCKET = "/run/isthmus/agent.sock"
DEFAULT_TIMEOUT = 10.0
WAIT_POLL_SECONDS = 0.5  # how often a --wait-... flag asks again


class CtlError(Exception):
    """A failure reported as one line on stderr with exit status 1."""


def _stub(factory: Any, channel: Any) -> Any:
    # The generated *_pb2_grpc modules have no type stubs; calling through Any keeps mypy strict quiet.
    return factory(channel)


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CtlError(f"{flag}: cannot read {path}: {exc.strerror}") from exc


class BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds ``authorization: Bearer TOKEN`` to every call."""

    def __init__(self, token: str) -> None:
        self.metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), self.metadata])

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._with_token(client_call_details), request)


@dataclass
class Ctl:
    """What every command needs: where to connect, how to print, and the one channel it opens."""

    coordinator: str = DEFAULT_COORDINATOR
    admin_socket: str = DEFAULT_ADMIN_SOCKET
    output: str = "table"
    timeout: float = DEFAULT_TIMEOUT
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None
    unavailable_hint: str = ""  # names the address tried, once a channel is open
    _channel: Any = None

    def _coordinator_channel(self) -> Any:
        if self._channel is None:
            self.unavailable_hint = (f"is a coordinator running at {self.coordinator}? "
                                     f"set --coordinator or ${ENV_COORDINATOR}")
            if self.tls_ca is None:
                self._channel = grpc.insecure_channel(self.coordinator)
            else:
                creds = grpc.ssl_channel_credentials(
                    root_certificates=_read(self.tls_ca, "--tls-ca"),
                    private_key=_read(self.tls_key, "--tls-key") if self.tls_key else None,
                    certificate_chain=_read(self.tls_cert, "--tls-cert") if self.tls_cert else None,
                )
                # A unix socket has no host name; the coordinator's certificate names localhost.
                options = ([("grpc.ssl_target_name_override", "localhost")]
                           if self.coordinator.startswith("unix:") else [])
                self._channel = grpc.secure_channel(self.coordinator, creds, options=options)
            if self.token:
                self._channel = grpc.intercept_channel(self._channel, BearerToken(self.token))
        return self._channel

    def sites(self) -> Any:
        return _stub(api_pb2_grpc.SiteServiceStub, self._coordinator_channel())

    def endpoints(self) -> Any:
        return _stub(api_pb2_grpc.EndpointServiceStub, self._coordinator_channel())

    def connections(self) -> Any:
        return _stub(api_pb2_grpc.ConnectionServiceStub, self._coordinator_channel())

    def status(self) -> Any:
        return _stub(api_pb2_grpc.StatusServiceStub, self._coordinator_channel())

    def border(self) -> Any:
        return _stub(l2gw_pb2_grpc.BorderGatewayServiceStub, self._coordinator_channel())

    def stub(self, factory: Any) -> Any:
        return _stub(factory, self._coordinator_channel())

    def admin(self) -> Any:
        if self._channel is None:
            self.unavailable_hint = (f"is the agent running with admin socket {self.admin_socket}? "
                                     f"set --socket or ${ENV_ADMIN_SOCKET}")
            self._channel = grpc.insecure_channel("unix:" + self.admin_socket)
        return _stub(admin_pb2_grpc.AgentAdminStub, self._channel)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def print_json(self, value: Message | Sequence[Message]) -> None:
        data = message_json(value) if isinstance(value, Message) else [message_json(v) for v in value]
        print(json.dumps(data, indent=2))

    def show(self, items: Sequence[Any], columns: Sequence[str], row: Callable[[Any], list[str]]) -> None:
        """A list of objects: a table, or a JSON array."""
        if self.output == "json":
            self.print_json(items)
        else:
            print(format_table(columns, [row(i) for i in items]))

    def show_one(self, item: Any, columns: Sequence[str], row: Callable[[Any], list[str]]) -> None:
        """One object: a one-row table, or a JSON object."""
        if self.output == "json":
            self.print_json(item)
        else:
            print(format_table(columns, [row(item)]))

    def show_deleted(self, what: str, reply: api_pb2.DeleteResponse | l2gw_pb2.DeleteByIdResponse) -> None:
        if self.output == "json":
            self.print_json(reply)
        else:
            print(f"deleted {what} at revision {reply.revision}")


# Each command prints its result; a failure is raised and becomes one line on stderr with exit status 1.
Command: TypeAlias = Callable[[Ctl, Namespace], None]


def all_pages(call: Callable[..., Any], request: Any, field: str, timeout: float) -> list[Any]:
    """Every item of a paged List call, following next_page_token."""
    items: list[Any] = []
    while True:
        reply = call(request, timeout=timeout)
        items += list(getattr(reply, field))
        if not reply.next_page_token:
            return items
        request.page_token = reply.next_page_token


def follow(ctl: Ctl, call: Any, header: str, line: Callable[[Any], str], resume_flag: str) -> None:
    """Print a server stream as it comes (no deadline: until stopped); a broken one says where to resume."""
    last = 0
    try:
        if ctl.output == "table":
            print(header, flush=True)
        for item in call:
            last = item.revision
            print(json.dumps(message_json(item)) if ctl.output == "json" else line(item), flush=True)
    except KeyboardInterrupt:
        call.cancel()
    except grpc.RpcError as exc:
        if not last:
            raise
        # Replaying the last revision may repeat an item but never skips one.
        raise CtlError(describe_rpc_error(exc, ctl.unavailable_hint) + f"; resume with {resume_flag} {last}") from exc
