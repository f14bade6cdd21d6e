"""The isthmus exception tree; each class maps to one gRPC status code.

    IsthmusError
    ├── InvalidArgument      INVALID_ARGUMENT   (names the field)
    ├── NotFound             NOT_FOUND          (names the field or object)
    ├── AlreadyExists        ALREADY_EXISTS
    ├── FailedPrecondition   FAILED_PRECONDITION
    ├── Aborted              ABORTED            (stale version / lost race)
    ├── OutOfRange           OUT_OF_RANGE       (compacted watch revision)
    └── Unavailable          UNAVAILABLE        (etcd or a peer cannot be reached)

Servicers translate these at the gRPC edge (``grpc_code``); everything below
the edge raises them and never builds gRPC statuses itself.
"""

from __future__ import annotations


class IsthmusError(Exception):
    """Base of every error isthmus raises on purpose."""

    code_name = "UNKNOWN"

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.message = f"{field}: {message}" if field else message
        super().__init__(self.message)


class InvalidArgument(IsthmusError):
    code_name = "INVALID_ARGUMENT"


class NotFound(IsthmusError):
    code_name = "NOT_FOUND"


class AlreadyExists(IsthmusError):
    code_name = "ALREADY_EXISTS"


class FailedPrecondition(IsthmusError):
    code_name = "FAILED_PRECONDITION"


class Aborted(IsthmusError):
    code_name = "ABORTED"


class OutOfRange(IsthmusError):
    code_name = "OUT_OF_RANGE"


class Unavailable(IsthmusError):
    code_name = "UNAVAILABLE"
