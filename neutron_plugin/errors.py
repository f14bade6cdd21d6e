"""isthmus' answers as Neutron's exceptions, so the REST client gets the status code Neutron would give."""

from __future__ import annotations

from neutron_lib import exceptions as n_exc

from isthmus.neutron_plugin.client import CoordinatorError


class IsthmusUnavailable(n_exc.ServiceUnavailable):
    message = "isthmus coordinator unavailable, nothing was changed: %(reason)s"


class IsthmusConflict(n_exc.Conflict):
    message = "%(reason)s"


class IsthmusNotFound(n_exc.NotFound):
    message = "%(resource)s %(id)s could not be found"


def translate(exc: CoordinatorError, resource: str, object_id: str = "") -> Exception:
    """The Neutron exception for a refusal of the coordinator; its message keeps isthmus' field name.

    With ``object_id`` (a call that names the object itself: get, update, delete), NOT_FOUND means that
    object is missing: 404. Otherwise it is an object the request refers to (a site's parent, an endpoint's
    site, a connection's end): 400, naming the field.
    """
    if exc.code == "NOT_FOUND" and object_id:
        return IsthmusNotFound(resource=resource, id=object_id)          # 404
    if exc.code in ("INVALID_ARGUMENT", "NOT_FOUND", "OUT_OF_RANGE"):
        return n_exc.BadRequest(resource=resource, msg=exc.message)      # 400
    if exc.code in ("ALREADY_EXISTS", "FAILED_PRECONDITION", "ABORTED"):
        return IsthmusConflict(reason=exc.message)                       # 409
    return IsthmusUnavailable(reason=f"{exc.code}: {exc.message}")       # 503
