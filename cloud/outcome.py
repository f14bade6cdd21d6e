"""What an ensure or a copy of a keypair, security group or image found or did in one region."""

from __future__ import annotations

from dataclasses import dataclass

IN_SYNC = "IN_SYNC"
CONFLICT = "CONFLICT"


@dataclass(frozen=True)
class Outcome:
    """What an ensure or copy found or did in one region."""

    state: str  # IN_SYNC or CONFLICT
    detail: str  # a sentence for people: "created", "in sync", why it conflicts, ...
    target_id: str  # the resource's id in this region (a keypair's name); "" when there is none
    created: bool  # isthmus created (or re-created) it: it is isthmus's to delete later
    changed: bool = False  # this call changed the region (created, re-created, repaired, copied): an event
