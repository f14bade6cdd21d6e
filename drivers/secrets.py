"""Secret references of the drivers: a peering's ``bgp.password_ref`` (``file:/PATH`` or ``env:NAME``).

Read on the agent host when a driver applies a peering, never stored or logged; an error
names the path or variable, never the secret. Used by every driver that sets a BGP
session's TCP MD5 password (bgp, opendaylight).
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_MD5_KEY = 80  # bytes: TCP_MD5SIG_MAXKEYLEN of Linux (RFC 2385)


class SecretError(Exception):
    """A password reference cannot be resolved; the message names the path or variable, never a secret."""


def read_secret(ref: str) -> str:
    """The secret named by ``ref`` (``file:/PATH`` or ``env:NAME``), without a trailing newline.

    Raises SecretError naming the path or variable when it is missing, unreadable,
    empty or longer than TCP MD5 allows.
    """
    if ref.startswith("file:"):
        path = ref[len("file:"):]
        try:
            secret = Path(path).read_text().rstrip("\r\n")
        except OSError as exc:
            raise SecretError(f"cannot read the BGP password file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise SecretError(f"the BGP password file {path} is not UTF-8 text") from None
        where = f"password file {path}"
    elif ref.startswith("env:"):
        name = ref[len("env:"):]
        if name not in os.environ:
            raise SecretError(f"environment variable {name} (BGP password) is not set for the agent")
        secret = os.environ[name]
        where = f"environment variable {name}"
    else:
        raise SecretError(f"password_ref must be file:/PATH or env:NAME, not {ref.split(':', 1)[0]!r}")
    if not secret:
        raise SecretError(f"the BGP {where} is empty")
    if len(secret.encode()) > MAX_MD5_KEY:
        raise SecretError(f"the BGP password in {where} is longer than {MAX_MD5_KEY} bytes (TCP MD5 limit)")
    return secret
