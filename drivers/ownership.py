"""What a controller driver owns and how it reports it, shared by the controller drivers (opendaylight, onos).

``OwnedRecord`` is the record of the objects a driver created on a controller
(``STATE_DIR/<driver>-owned.json``, per controller URL): only those are ever removed.
Addresses are compared in canonical form; ``observations`` turns the errors of the last
apply and the states read from the controller into what ``Driver.observe`` returns.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from isthmus.core.model import ObservedPeering, PeeringState
from isthmus.drivers.base import DriverError, StateClock


class OwnedRecord:
    """What a driver created on a controller, kept in its state directory (``{url: {kind: [names]}}``).

    Written atomically (temporary file and rename), readable by the agent's user only.
    """

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.url = url

    def load(self) -> dict[str, list[str]]:
        """The record of this controller (empty when there is none); raises DriverError when it is unreadable."""
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise DriverError(f"cannot read {self.path}: {exc}; move it away to start afresh "
                              "(isthmus then owns nothing it created before)", terminal=True) from None
        mine = doc.get(self.url, {}) if isinstance(doc, dict) else {}
        return {k: [str(x) for x in v] for k, v in mine.items() if isinstance(v, list)}

    def save(self, record: Mapping[str, Iterable[str]]) -> None:
        """Replace this controller's record; raises DriverError when it cannot be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                doc = json.loads(self.path.read_text())
            except (FileNotFoundError, ValueError):
                doc = {}
            doc = doc if isinstance(doc, dict) else {}
            doc[self.url] = {k: sorted(set(v)) for k, v in record.items()}
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise DriverError(f"cannot write {self.path}: {exc}") from exc


def canonical_address(text: str) -> str:
    """``text`` as an IP address in canonical form; raises ValueError."""
    return str(ipaddress.ip_address(text.strip()))


def observations(names: Iterable[str], errors: Mapping[str, str],
                 states: Mapping[str, tuple[PeeringState, str]], clock: StateClock,
                 driver: str) -> dict[str, ObservedPeering]:
    """What a controller driver reports: the apply error of a peering, else what the controller has."""
    out: dict[str, ObservedPeering] = {}
    for name in names:
        if name in errors:
            state, error = PeeringState.ERROR, errors[name]
        else:
            state, error = states.get(name, (PeeringState.ERROR, "not realized"))
        out[name] = clock.observed(name, state, error, driver)
    return out
