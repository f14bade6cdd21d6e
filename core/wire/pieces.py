"""Messages that fit: a Snapshot or Delta of the agent channel in pieces, and answers paged by their size.

gRPC refuses a message over the receiver's limit (4 MiB by default: the agents, isthmusctl and the
coordinator's ``--listen`` server all keep it). A site's desired state is not bounded by it: many
connections whose endpoints carry large properties add up. So the coordinator splits a Snapshot or
Delta whose encoded size passes ``PIECE_BYTES`` into pieces (``more`` set on all but the last), for an
agent that said in Hello that it takes them, and the agent puts them back together and takes the whole
only once the last piece arrived. One peering is never split: it is at most its two endpoints, each one
etcd value (etcd refuses values over 1.5 MiB), so a piece holding one peering alone always fits.

Answers with rows (status, lists, the agent's local peerings) stop adding rows once ``PAGE_BYTES`` is
reached and say where the next page starts.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from isthmus.core.errors import InvalidArgument
from isthmus.v1 import agent_pb2 as apb

MESSAGE_LIMIT = 4 * 1024 * 1024  # gRPC's default receive limit: what every isthmus program accepts
PIECE_BYTES = 1024 * 1024  # a Snapshot or Delta larger than this goes in pieces (to agents that take them)
PAGE_BYTES = 1024 * 1024  # rows an answer holds before the rest go to the next page
MAX_PAGE = 1000  # items an answer holds at most (page_size 0 asks for this many)
_HEADER_BYTES = 64  # revision, base_revision, more, the oneof's tag and length, with room to spare

T = TypeVar("T")
M = TypeVar("M")


def page_token(key: str) -> str:
    """The token of the page after the row with ``key`` (rows go in key order)."""
    return base64.urlsafe_b64encode(key.encode()).decode()


def token_key(token: str, field: str = "page_token") -> str:
    """The key a ``page_token`` made; "" for no token. INVALID_ARGUMENT for anything else."""
    if not token:
        return ""
    try:
        return base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("is not a token from a previous response", field) from None


def byte_size(message: Any) -> int:
    """A message's encoded size: the ``size_of`` of ``page`` and ``fit`` for items that are messages already."""
    return int(message.ByteSize())


def page(items: list[T], key: Callable[[T], str], size: int, token: str,
         size_of: Callable[[T], int] | None = None) -> tuple[list[T], str]:
    """One page of ``items`` in key order after ``token``; the token of the next page ("" when none).

    With ``size_of`` (an item's encoded size), the page also ends before ``PAGE_BYTES`` of items (it
    always holds one), so that no answer passes the message limit, however large its items are.
    """
    if size < 0 or size > MAX_PAGE:
        raise InvalidArgument(f"{size} is out of range 0..{MAX_PAGE} (0: {MAX_PAGE})", "page_size")
    size = size or MAX_PAGE
    after = token_key(token)
    ordered = sorted(items, key=key)
    rest = [i for i in ordered if key(i) > after] if after else ordered
    chunk = rest[:size]
    more = len(rest) > size
    if size_of is not None and chunk:
        chunk, cut = fit(chunk, size_of, PAGE_BYTES)
        more = more or cut
    return chunk, page_token(key(chunk[-1])) if more and chunk else ""


def page_of(items: list[T], key: Callable[[T], str], size: int, token: str,
            to_message: Callable[[T], M]) -> tuple[list[M], str]:
    """``page`` sized by each item's message, and the page's messages: each item converted once."""
    made: dict[int, M] = {}

    def message(item: T) -> M:
        if id(item) not in made:
            made[id(item)] = to_message(item)
        return made[id(item)]

    chunk, next_token = page(items, key, size, token, lambda item: byte_size(message(item)))
    return [message(item) for item in chunk], next_token


def newest_that_fit(messages: list[T], places: list[Any], limit: int) -> tuple[list[T], str]:
    """For an answer of "the newest ``limit``" (events, audit): of ``messages`` (oldest first, ``places[i]`` where
    message i stands), the newest that fit in ``PAGE_BYTES``, oldest first, and the token of the older ones still
    due ("" when all fit). Pages go back in time; ``back_token`` reads the token."""
    taken, cut = fit(reversed(messages), byte_size, PAGE_BYTES)
    if not cut:
        return taken[::-1], ""
    place = places[len(messages) - len(taken)]
    return taken[::-1], page_token(json.dumps({"before": place, "left": limit - len(taken)}))


def back_token(token: str, limit: int, place_ok: Callable[[Any], bool]) -> tuple[Any, int]:
    """The place to read below and the number of items still due that a ``newest_that_fit`` token holds, given
    the request's ``limit``; INVALID_ARGUMENT naming ``page_token`` for anything else."""
    try:
        data = json.loads(token_key(token))
        before, left = data["before"], int(data["left"])
        if not (place_ok(before) and 0 < left <= limit):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument("is not a token from a previous answer with the same limit", "page_token") from None
    return before, left


def element_bytes(size: int) -> int:
    """What an element of ``size`` bytes costs in a repeated field: its tag, its length, itself."""
    length = 1
    while size >= 0x80 << (7 * (length - 1)):
        length += 1
    return 1 + length + size


def fit(items: Iterable[T], size_of: Callable[[T], int], budget: int) -> tuple[list[T], bool]:
    """The leading ``items`` whose sizes add up to at most ``budget`` (always at least one), and whether
    any were left out. ``size_of`` is asked only for the items looked at."""
    taken: list[T] = []
    used = 0
    for item in items:
        cost = element_bytes(size_of(item))
        if taken and used + cost > budget:
            return taken, True
        taken.append(item)
        used += cost
    return taken, False


def split(msg: apb.CoordinatorMessage, limit: int = PIECE_BYTES) -> list[apb.CoordinatorMessage]:
    """A Snapshot or Delta as pieces of at most ``limit`` encoded bytes each (one peering larger than that
    goes alone), in order, ``more`` set on all but the last; any other message, or one that fits, alone."""
    kind = msg.WhichOneof("msg")
    if kind not in ("snapshot", "delta") or msg.ByteSize() <= limit:
        return [msg]
    budget = limit - _HEADER_BYTES
    items: list[tuple[str, Any, int]]
    if kind == "snapshot":
        items = [("peerings", p, p.ByteSize()) for p in msg.snapshot.peerings]
    else:
        items = [("upserts", p, p.ByteSize()) for p in msg.delta.upserts]
        items += [("removes", name, len(name.encode())) for name in msg.delta.removes]
    pieces: list[apb.CoordinatorMessage] = []
    piece = _empty_piece(msg)
    used = 0
    for field, value, size in items:
        cost = element_bytes(size)
        if used and used + cost > budget:
            pieces.append(piece)
            piece = _empty_piece(msg)
            used = 0
        getattr(getattr(piece, kind), field).append(value)
        used += cost
    pieces.append(piece)
    for p in pieces[:-1]:
        getattr(p, kind).more = True
    return pieces


def _empty_piece(msg: apb.CoordinatorMessage) -> apb.CoordinatorMessage:
    if msg.HasField("snapshot"):
        return apb.CoordinatorMessage(snapshot=apb.Snapshot(revision=msg.snapshot.revision))
    return apb.CoordinatorMessage(delta=apb.Delta(revision=msg.delta.revision, base_revision=msg.delta.base_revision))


class PieceError(Exception):
    """The pieces on a stream do not make one message: the stream is dropped, nothing of them is taken."""


class Assembler:
    """Puts the pieces of one Snapshot or Delta back together, for one stream.

    ``add`` hands back each message that is whole: one sent whole at once, or, with its last piece, the
    pieces joined into one (``more`` cleared). While pieces are still due it hands back None. A piece of
    another kind, revision or base, or any other message between pieces, is a PieceError.
    """

    def __init__(self) -> None:
        self.pending: apb.CoordinatorMessage | None = None
        self.pieces = 0  # pieces of the pending message so far

    def add(self, msg: apb.CoordinatorMessage) -> apb.CoordinatorMessage | None:
        kind = msg.WhichOneof("msg")
        if self.pending is None:
            if kind in ("snapshot", "delta") and getattr(msg, kind).more:
                self.pending = msg
                self.pieces = 1
                return None
            return msg
        pending_kind = self.pending.WhichOneof("msg")
        if kind != pending_kind:
            raise PieceError(f"a {kind or 'empty message'} came between the pieces of a {pending_kind} "
                             f"(after piece {self.pieces})")
        if kind == "snapshot":
            whole, part = self.pending.snapshot, msg.snapshot
            if part.revision != whole.revision:
                raise PieceError(f"a piece of the snapshot of rev {whole.revision} has rev {part.revision}")
            whole.peerings.extend(part.peerings)
        else:
            whole_d, part_d = self.pending.delta, msg.delta
            if (part_d.revision, part_d.base_revision) != (whole_d.revision, whole_d.base_revision):
                raise PieceError(f"a piece of the delta from rev {whole_d.base_revision} to {whole_d.revision} is "
                                 f"from rev {part_d.base_revision} to {part_d.revision}")
            whole_d.upserts.extend(part_d.upserts)
            whole_d.removes.extend(part_d.removes)
        self.pieces += 1
        if getattr(msg, kind).more:
            return None
        done = self.pending
        getattr(done, kind).more = False
        self.pending = None
        return done
