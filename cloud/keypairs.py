"""Keypairs (Nova) made to exist in one region with a given public key.

A keypair is isthmus's when the caller says so (``owned``); one is removed only while it still has the key
isthmus gave it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from typing import Any

from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from isthmus.cloud.outcome import CONFLICT, IN_SYNC, Outcome
from isthmus.cloud.session import CloudError, SpecError, calls, region_name

log = logging.getLogger(__name__)

KEYPAIR_USER_MICROVERSION = (2, 10)  # Nova takes a user_id for keypairs from this microversion on


def _key_blob(public_key: str) -> tuple[str, bytes]:
    """The type and the decoded key of an OpenSSH public key line; raises SpecError naming what is wrong."""
    parts = public_key.split()
    if len(parts) < 2:
        raise SpecError("not an OpenSSH public key line (TYPE BASE64 [COMMENT])")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as exc:
        raise SpecError(f"public key of type {parts[0]}: the key is not base64 ({exc})") from None
    # The key starts with its type as an SSH string: a line whose two parts disagree is no key.
    size = int.from_bytes(blob[:4], "big")
    if blob[4:4 + size] != parts[0].encode():
        raise SpecError(f"public key of type {parts[0]}: the key is not one of that type")
    return parts[0], blob


def keypair_fingerprint(public_key: str) -> str:
    """Nova's fingerprint of an OpenSSH public key line: the MD5 of the key, colon-separated hex.

    Raises SpecError when ``public_key`` is not such a line.
    """
    digest = hashlib.md5(_key_blob(public_key)[1], usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _same_key(have: str, want: str) -> bool:
    """Same key type and key, whatever the comments."""
    return have.split()[:2] == want.split()[:2]


def _keypair_where(name: str, user_id: str) -> str:
    return f"keypair {name}" + (f" of user {user_id}" if user_id else "")


def _check_keypair_user(conn: Connection, user_id: str) -> None:
    """Below microversion 2.10 Nova ignores a user_id: the keypair would be made for the connection's user."""
    if not user_id:
        return
    data = conn.compute.get_endpoint_data()
    top = data.max_microversion if data is not None else None
    if top is None or tuple(top) < KEYPAIR_USER_MICROVERSION:
        raise SpecError(f"{region_name(conn)}: keypairs of user {user_id}: Nova's API is at microversion "
                        f"{'.'.join(map(str, top)) if top else '2.1'}; acting for another user needs 2.10")


def _find_keypair(conn: Connection, name: str, user_id: str) -> Any:
    try:
        return conn.compute.get_keypair(name, user_id=user_id or None)
    except os_exceptions.NotFoundException:
        return None


def _create_keypair(conn: Connection, name: str, public_key: str, user_id: str) -> bool:
    """False when a keypair of that name appeared meanwhile (409)."""
    attrs: dict[str, Any] = {"name": name, "public_key": public_key}
    if user_id:
        attrs["user_id"] = user_id
    try:
        conn.compute.create_keypair(**attrs)
    except os_exceptions.ConflictException:
        return False
    log.info("%s: created %s", region_name(conn), _keypair_where(name, user_id))
    return True


def ensure_keypair(conn: Connection, name: str, public_key: str, user_id: str, *, replace: bool,
                   owned: bool) -> Outcome:
    """Make keypair ``name`` of user ``user_id`` ("": the connection's user) exist with ``public_key``.

    Absent: created (created=True). Present with the same key type and key (comments aside): IN_SYNC,
    created=``owned``. Present with another key: deleted and re-created when ``owned`` (isthmus made it) or
    ``replace``, else CONFLICT naming both fingerprints and nothing is touched.

    Raises SpecError for a malformed key, a name Nova refuses, or a user_id on a Nova below microversion
    2.10; CloudError when Nova fails or cannot be reached.
    """
    want = keypair_fingerprint(public_key)  # a malformed key fails here, before any call
    what = _keypair_where(name, user_id)
    with calls(conn, what):
        _check_keypair_user(conn, user_id)
        for _ in range(3):  # a create racing ours (409) or a delete racing our read: read again
            current = _find_keypair(conn, name, user_id)
            if current is None:
                if _create_keypair(conn, name, public_key, user_id):
                    return Outcome(IN_SYNC, "created", name, True, changed=True)
                continue
            have = str(current.public_key or "")
            if _same_key(have, public_key):
                return Outcome(IN_SYNC, "already present with the same key", name, owned)
            have_fp = current.fingerprint or "unknown"
            if not (owned or replace):
                return Outcome(CONFLICT, f"keypair {name} has another key (fingerprint {have_fp}, expected {want})",
                               name, False)
            conn.compute.delete_keypair(name, ignore_missing=True, user_id=user_id or None)
            log.info("%s: deleted %s (fingerprint %s) to give it key %s", region_name(conn), what, have_fp, want)
            if _create_keypair(conn, name, public_key, user_id):
                return Outcome(IN_SYNC, f"re-created with the new key (had fingerprint {have_fp})", name, True,
                               changed=True)
    raise CloudError(f"{region_name(conn)}: {what}: created and deleted by someone else while isthmus made it")


def read_keypair(conn: Connection, name: str, user_id: str) -> str | None:
    """The public key of keypair ``name`` of ``user_id`` ("": the connection's user), None when there is none
    (the source of an intent that follows another region's keypair). Raises CloudError or SpecError (see
    ensure_keypair)."""
    with calls(conn, _keypair_where(name, user_id)):
        _check_keypair_user(conn, user_id)
        current = _find_keypair(conn, name, user_id)
    return None if current is None else str(current.public_key or "")


def remove_keypair(conn: Connection, name: str, user_id: str, public_key: str) -> bool:
    """Delete keypair ``name`` of ``user_id`` ("": the connection's user) only if it has ``public_key`` (the
    copy isthmus made); whether it deleted one. Raises CloudError or SpecError (see ensure_keypair)."""
    what = _keypair_where(name, user_id)
    with calls(conn, what):
        _check_keypair_user(conn, user_id)
        current = _find_keypair(conn, name, user_id)
        if current is None or not _same_key(str(current.public_key or ""), public_key):
            return False
        try:
            conn.compute.delete_keypair(name, ignore_missing=False, user_id=user_id or None)
        except os_exceptions.NotFoundException:
            return False
    log.info("%s: deleted %s", region_name(conn), what)
    return True
