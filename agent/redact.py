"""Secrets masked in a log line before it leaves the host: what oslo.log itself masks (oslo_utils.strutils.
mask_password: its keys and patterns, copied here since the agent does not run with OpenStack's libraries),
credentials in URLs, tokens in HTTP headers, Fernet tokens, and the operator's own patterns (--redact)."""

from __future__ import annotations

import re
from collections.abc import Sequence

MASK = "***"

# oslo_utils.strutils._SANITIZE_KEYS (oslo.utils 6.x), lower case: a key is looked for case-insensitively.
SANITIZE_KEYS = (
    "adminpass", "admin_pass", "password", "admin_password", "auth_token", "new_pass", "auth_password",
    "secret_uuid", "secret", "sys_pswd", "token", "configdrive", "chappassword", "encrypted_key", "private_key",
    "fernetkey", "sslkey", "passphrase", "cephclusterfsid", "octaviaheartbeatkey", "rabbitcookie",
    "cephmanilaclientkey", "pacemakerremoteauthkey", "designaterndckey", "cephadminkey", "heatauthencryptionkey",
    "cephclientkey", "keystonecredential", "barbicansimplecryptokek", "cephrgwkey", "swifthashsuffix",
    "migrationsshkey", "cephmdskey", "cephmonkey",
)

# oslo_utils.strutils._FORMAT_PATTERNS_1 and _2: key=value, key="value", --key value, <key>v</key>, "key": "v".
_ONE = [r"(%(key)s[0-9]*\s*[=]\s*)[^\s^\'^\"]+"]
_TWO = [
    r"(%(key)s[0-9]*\s*[=]\s*[\"\'])[^\"\']*([\"\'])",
    r"(%(key)s[0-9]*\s*[=]\s*[\"])[^\"]*([\"])",
    r"(%(key)s[0-9]*\s*[=]\s*[\'])[^\']*([\'])",
    r"(%(key)s[0-9]*\s+[\"\'])[^\"\']*([\"\'])",
    r"([-]{2}%(key)s[0-9]*\s+)[^\'^\"^=^\s]+([\s]*)",
    r"(<%(key)s[0-9]*>)[^<]*(</%(key)s[0-9]*>)",
    r"([\"\']%(key)s[0-9]*[\"\']\s*:\s*[\"\'])[^\"\']*([\"\'])",
    r"([\'\"][^\"\']*%(key)s[0-9]*[\'\"]\s*:\s*u?[\'\"])[^\"\']*([\'\"])",
    r"([\'\"][^\'\"]*%(key)s[0-9]*[\'\"]\s*,\s*\'--?[A-z]+\'\s*,\s*u?[\'\"])[^\"\']*([\'\"])",
    r"(%(key)s[0-9]*\s*--?[A-z]+\s*)\S+(\s*)",
]

# As oslo does: the patterns of each key, run only on a line that holds the key (most lines hold none; one
# alternation of every key instead is slower, it cannot skip ahead to a literal).
_BY_KEY = {
    key: ([re.compile(p % {"key": key}, re.DOTALL | re.IGNORECASE) for p in _TWO],
          [re.compile(p % {"key": key}, re.DOTALL | re.IGNORECASE) for p in _ONE])
    for key in SANITIZE_KEYS
}

# Beyond oslo: what keystonemiddleware, requests and the database drivers print; each with a literal (in the
# lower-cased line) without which it cannot match, so most lines cost a few substring tests.
_ALWAYS = [
    ("x-", re.compile(r"(?i)((?:x-auth-token|x-subject-token|x-service-token|x-auth-key)['\"]?\s*[:=]\s*['\"]?)"
                      r"[^\s'\",}]+"), r"\1" + MASK),
    ("authorization", re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|basic|token)?\s*)[^\s'\",}]+"),
     r"\1" + MASK),
    ("://", re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@/\s]+(@)"), r"\1" + MASK + r"\2"),  # user:PASS@host
    ("gaaaaa", re.compile(r"gAAAAA[A-Za-z0-9_=-]{20,}"), MASK),  # a Fernet token (Keystone's tokens)
]


class Redactor:
    """Masks secrets in lines; ``extra``: the operator's patterns (whole match masked)."""

    def __init__(self, extra: Sequence[str] = ()) -> None:
        self.extra = [re.compile(p) for p in extra]

    def __call__(self, line: str) -> str:
        lower = line.lower()
        for key, (two, one) in _BY_KEY.items():
            if key in lower:
                for pattern in two:
                    line = pattern.sub(r"\g<1>" + MASK + r"\g<2>", line)
                for pattern in one:
                    line = pattern.sub(r"\g<1>" + MASK, line)
        for literal, pattern, replace in _ALWAYS:
            if literal in lower:
                line = pattern.sub(replace, line)
        for extra in self.extra:
            line = extra.sub(MASK, line)
        return line
