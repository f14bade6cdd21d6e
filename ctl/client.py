"""The session of one isthmusctl command: where it connects, the stubs it calls, how it prints, how it fails."""

from __future__ import annotations

import json
import time
import uuid
from argparse import Namespace
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf.message import Message

from isthmus.core.edge import REQUEST_ID_KEY
from isthmus.ctl.render import answered_by_server, describe_rpc_error, format_table, message_json
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


def coordinator_list(value: str) -> list[str]:
    """HOST:PORT[,HOST:PORT...] (or unix:PATH) as --coordinator and $ISTHMUS_COORDINATOR take it, and the agents."""
    return [c.strip() for c in value.split(",") if c.strip()]


def unreachable(exc: grpc.RpcError) -> bool:
    """gRPC could not get the call to a coordinator (as opposed to a coordinator answering UNAVAILABLE)."""
    return bool(exc.code() == grpc.StatusCode.UNAVAILABLE and not answered_by_server(exc))


class Coordinators:
    """A channel over every coordinator given, for the generated stubs.

    A call goes to the coordinator that answered last; when that one cannot be reached it goes to the next,
    within the call's deadline. An answer, even UNAVAILABLE about etcd, is final: every coordinator shares the
    one etcd cluster, and asking the next would only double the wait. Every unary call carries a request id,
    the same on each coordinator it reaches, so that a write whose answer was lost is not done twice (the
    coordinator answers the repeated request as it did the first).
    """

    def __init__(self, addresses: Sequence[str], open_channel: Callable[[str], Any]) -> None:
        self.addresses = list(addresses)
        self._open = open_channel
        self._channels: dict[int, Any] = {}
        self.current = 0

    def channel(self, index: int) -> Any:
        if index not in self._channels:
            self._channels[index] = self._open(self.addresses[index])
        return self._channels[index]

    def order(self) -> list[int]:
        n = len(self.addresses)
        return [(self.current + k) % n for k in range(n)]

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        def call(request: Any, timeout: float | None = None, metadata: Any = None, **options: Any) -> Any:
            md = [*(metadata or ()), (REQUEST_ID_KEY, str(uuid.uuid4()))]
            deadline = None if timeout is None else time.monotonic() + timeout
            order = self.order()
            for k, index in enumerate(order):
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                stub = self.channel(index).unary_unary(method, *args, **kwargs)
                try:
                    reply = stub(request, timeout=remaining, metadata=md, **options)
                except grpc.RpcError as exc:
                    if k == len(order) - 1 or not unreachable(exc) or (remaining is not None and remaining <= 0):
                        raise
                    continue
                self.current = index
                return reply
            raise AssertionError("unreachable: the last coordinator's error is raised")

        return call

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        def call(request: Any, **options: Any) -> FailoverStream:
            return FailoverStream(self, lambda index: self.channel(index).unary_stream(method, *args, **kwargs)(
                request, **options))

        return call

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.channel(self.current).stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.channel(self.current).stream_stream(method, *args, **kwargs)

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()


class FailoverStream:
    """A server stream that starts on the first coordinator it can reach; once an item came, it stays there."""

    def __init__(self, coordinators: Coordinators, start: Callable[[int], Any]) -> None:
        self._coordinators = coordinators
        self._start = start
        self._call: Any = None
        self._started = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._started:
            return next(self._call)
        order = self._coordinators.order()
        for k, index in enumerate(order):
            self._call = self._start(index)
            try:
                item = next(self._call)
            except grpc.RpcError as exc:
                if k == len(order) - 1 or not unreachable(exc):
                    raise
                continue
            self._started = True
            self._coordinators.current = index
            return item
        raise StopIteration

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()


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

    def _open(self, address: str) -> Any:
        if self.tls_ca is None:
            channel = grpc.insecure_channel(address)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(self.tls_ca, "--tls-ca"),
                private_key=_read(self.tls_key, "--tls-key") if self.tls_key else None,
                certificate_chain=_read(self.tls_cert, "--tls-cert") if self.tls_cert else None,
            )
            # A unix socket has no host name; the coordinator's certificate names localhost.
            options = [("grpc.ssl_target_name_override", "localhost")] if address.startswith("unix:") else []
            channel = grpc.secure_channel(address, creds, options=options)
        if self.token:
            channel = grpc.intercept_channel(channel, BearerToken(self.token))
        return channel

    def _coordinator_channel(self) -> Any:
        if self._channel is None:
            addresses = coordinator_list(self.coordinator) or [DEFAULT_COORDINATOR]
            where = " or ".join(addresses)
            self.unavailable_hint = (f"is a coordinator running at {where}? "
                                     f"set --coordinator or ${ENV_COORDINATOR}")
            self._channel = Coordinators(addresses, self._open)
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


def back_pages(call: Callable[..., Any], request: Any, field: str, timeout: float) -> list[Any]:
    """Every item of a call answering the newest items first in pages that go back in time (events,
    audit): each page is oldest first; the whole list is too."""
    items: list[Any] = []
    while True:
        reply = call(request, timeout=timeout)
        items[:0] = list(getattr(reply, field))
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
