"""Neutron's collections listed page by page, every project's: what capacity counts and addresses lists."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from isthmus.cloud.session import CloudError, SpecError, field_text, region_name, request

NEUTRON_PAGE_SIZE = 1000  # items per Neutron list request


def list_items(conn: Connection, collection: str, fields: Sequence[str], page_size: int, *,
               optional: bool = False) -> Iterator[dict[str, Any]]:
    """Every item of Neutron's ``collection`` the connection sees (an admin sees every project's), ``id`` and
    ``fields`` of each only, ``page_size`` at a time in id order.

    ``optional``: a collection this Neutron lacks (404 on the first page: routers and floating IPs without the
    L3 plugin) has no items. Neutron answers 404 when a page's marker was deleted since the page before (busy
    clouds, long listings): the listing goes on from an earlier item of that page, skipping what it gave already.
    """
    if page_size <= 0:
        raise SpecError(f"page size {page_size}: must be positive")
    path = "/" + collection.replace("_", "-")
    query = [("fields", f) for f in ("id", *fields)] + [("sort_key", "id"), ("sort_dir", "asc"),
                                                         ("limit", str(page_size))]
    markers: list[str] = []  # the previous page's ids: any of them continues the listing
    last = ""  # the greatest id given so far
    first = True
    while True:
        marker = [("marker", markers[-1])] if markers else []
        try:
            page = request(conn, "network", "GET", f"{path}?{urllib.parse.urlencode(query + marker)}")
        except os_exceptions.NotFoundException:
            if first:
                if optional:
                    return
                raise
            markers.pop()
            if not markers:
                raise CloudError(f"{region_name(conn)}: listing {collection}: every item of a page was deleted "
                                 "while the listing went on") from None
            continue
        first = False
        items = page.get(collection) or []
        fresh = [item for item in items if field_text(item, "id") > last]
        yield from fresh
        if fresh:
            last = field_text(fresh[-1], "id")
        ids = [field_text(item, "id") for item in items]
        if not items or not any(link.get("rel") == "next" for link in page.get(f"{collection}_links") or ()):
            return
        if ids == markers:
            raise CloudError(f"{region_name(conn)}: listing {collection}: Neutron answers the same page again")
        markers = ids
