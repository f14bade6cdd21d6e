"""The systemd units in deploy/systemd.

* `systemd-analyze verify` must not print a single warning or error about our
  units. It is run on copies whose ExecStart= points at the console scripts
  installed next to the running Python (the units themselves name
  /usr/local/bin, which need not exist here); the agent template is verified
  as the instance isthmus-agent@region-one.service.
* The settings the deployment relies on (capabilities, restart policy,
  directories, hardening) are checked in the unit text.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT_DIR = REPO / "deploy" / "systemd"
COORDINATOR_UNIT = UNIT_DIR / "isthmus-coordinator.service"
AGENT_UNIT = UNIT_DIR / "isthmus-agent@.service"
INSTANCE = "region-one"

# Where the committed units expect the console scripts.
INSTALLED_BIN = "/usr/local/bin"
# Where the scripts of the isthmus install under test are (do not resolve
# sys.executable: in a venv it is a symlink to the base interpreter).
BIN_DIR = Path(sys.executable).parent

AGENT_CAPS = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}

Unit = dict[str, list[tuple[str, str]]]


def parse_unit(path: Path) -> Unit:
    """Parse a unit file into {section: [(key, value), ...]}, keeping repeats."""
    sections: Unit = {}
    current: str | None = None
    pending = ""
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not a key=value line: {raw!r}"
        assert current is not None, f"{path.name}:{number}: setting outside a section"
        sections[current].append((key.strip(), value.strip()))
    assert not pending, f"{path.name}: file ends in a line continuation"
    return sections


def values(unit: Unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def last(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert found, f"[{section}] {key}= is missing"
    return found[-1]


def word_list(unit: Unit, section: str, key: str) -> list[str]:
    """Effective value of a list setting: an empty assignment resets it."""
    found = values(unit, section, key)
    assert found, f"[{section}] {key}= is missing"
    words: list[str] = []
    for value in found:
        words = words + value.split() if value else []
    return words


@pytest.fixture(scope="module")
def coordinator() -> Unit:
    return parse_unit(COORDINATOR_UNIT)


@pytest.fixture(scope="module")
def agent() -> Unit:
    return parse_unit(AGENT_UNIT)


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
}


@pytest.mark.parametrize("unit_name", ["coordinator", "agent"])
def test_common_hardening(unit_name: str, request: pytest.FixtureRequest) -> None:
    unit: Unit = request.getfixturevalue(unit_name)
    for key, expected in HARDENING.items():
        assert last(unit, "Service", key) == expected, key
    assert "@system-service" in values(unit, "Service", "SystemCallFilter")
    assert last(unit, "Service", "RestartSec") == "2"
    assert "network-online.target" in word_list(unit, "Unit", "After")
    assert "network-online.target" in word_list(unit, "Unit", "Wants")
    assert last(unit, "Install", "WantedBy") == "multi-user.target"


def test_coordinator_settings(coordinator: Unit) -> None:
    exec_start = last(coordinator, "Service", "ExecStart").split()
    assert exec_start[0] == f"{INSTALLED_BIN}/isthmus-coordinator"
    assert exec_start[-1] == "$ISTHMUS_COORDINATOR_OPTS"
    assert last(coordinator, "Service", "EnvironmentFile") == "-/etc/isthmus/coordinator.env"
    assert last(coordinator, "Service", "Restart") == "on-failure"
    assert last(coordinator, "Service", "KillMode") == "mixed"
    assert values(coordinator, "Service", "TimeoutStopSec")
    state_dir = last(coordinator, "Service", "StateDirectory")
    assert state_dir == "isthmus/coordinator"
    # The embedded etcd keeps its data in the StateDirectory.
    data_dir = exec_start[exec_start.index("--data-dir") + 1]
    assert data_dir == f"/var/lib/{state_dir}"
    assert values(coordinator, "Service", "RuntimeDirectory")
    assert (
        last(coordinator, "Service", "DynamicUser") == "yes"
        or last(coordinator, "Service", "User") == "isthmus"
    )
    assert word_list(coordinator, "Service", "CapabilityBoundingSet") == []
    assert sorted(word_list(coordinator, "Service", "RestrictAddressFamilies")) == [
        "AF_INET",
        "AF_INET6",
        "AF_UNIX",
    ]


def test_agent_settings(agent: Unit) -> None:
    exec_start = last(agent, "Service", "ExecStart").split()
    assert exec_start[0] == f"{INSTALLED_BIN}/isthmus-agent"
    assert exec_start[-1] == "$ISTHMUS_AGENT_OPTS"
    options = dict(zip(exec_start[1:-1:2], exec_start[2:-1:2], strict=True))
    assert options["--site"] == "%i"
    assert last(agent, "Service", "EnvironmentFile") == "-/etc/isthmus/agent-%i.env"

    # Only the agent is signalled on stop: its BGP speakers outlive it (docs/drivers.md, bgp).
    assert last(agent, "Service", "KillMode") == "process"

    # Runs as root, limited to the network capabilities.
    assert not values(agent, "Service", "User")
    assert set(word_list(agent, "Service", "CapabilityBoundingSet")) == AGENT_CAPS
    assert set(word_list(agent, "Service", "AmbientCapabilities")) == AGENT_CAPS

    families = word_list(agent, "Service", "RestrictAddressFamilies")
    assert "AF_NETLINK" in families
    assert "AF_PACKET" not in families
    assert set(families) <= {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}

    assert last(agent, "Service", "Restart") == "always"

    # --state-dir is the (writable) StateDirectory, the admin socket lives in
    # the private RuntimeDirectory.
    state_dir = last(agent, "Service", "StateDirectory")
    assert state_dir == "isthmus/agent-%i"
    assert options["--state-dir"] == f"/var/lib/{state_dir}"
    assert options["--state-dir"] in word_list(agent, "Service", "ReadWritePaths")
    runtime_dir = last(agent, "Service", "RuntimeDirectory")
    assert options["--admin-socket"] == f"/run/{runtime_dir}/admin.sock"
    assert last(agent, "Service", "RuntimeDirectoryMode") == "0700"


def test_agent_runs_as_root(agent: Unit) -> None:
    # Root limited by the capability bounding set, not an unprivileged user.
    assert not values(agent, "Service", "User")
    assert values(agent, "Service", "DynamicUser") in ([], ["no"])
    assert "CAP_SYS_ADMIN" not in word_list(agent, "Service", "CapabilityBoundingSet")


# --- systemd-analyze verify ---------------------------------------------------


def find_systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None and os.access("/usr/bin/systemd-analyze", os.X_OK):
        found = "/usr/bin/systemd-analyze"
    if found is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    return found


def installed_script(name: str) -> Path:
    script = BIN_DIR / name
    if not (script.is_file() and os.access(script, os.X_OK)):
        pytest.skip(f"console script {script} not installed (pip install -e . in this environment)")
    return script


def copy_with_exec_start(unit: Path, dest: Path, script_name: str) -> None:
    """Copy `unit` to `dest`, pointing ExecStart= at the installed script."""
    script = installed_script(script_name)
    assert not re.search(r"\s", str(script)), f"unusable path for ExecStart=: {script}"
    text = unit.read_text(encoding="utf-8")
    pattern = re.compile(rf"^(ExecStart=){re.escape(INSTALLED_BIN)}/{re.escape(script_name)}(?=\s|$)", re.M)
    text, count = pattern.subn(lambda m: m.group(1) + str(script), text)
    assert count == 1, f"{unit.name}: expected one ExecStart={INSTALLED_BIN}/{script_name}"
    dest.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("source", "copy_name", "script_name"),
    [
        (COORDINATOR_UNIT, "isthmus-coordinator.service", "isthmus-coordinator"),
        (AGENT_UNIT, f"isthmus-agent@{INSTANCE}.service", "isthmus-agent"),
    ],
    ids=["coordinator", f"agent@{INSTANCE}"],
)
def test_systemd_analyze_verify(source: Path, copy_name: str, script_name: str, tmp_path: Path) -> None:
    analyze = find_systemd_analyze()
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    copy = unit_dir / copy_name
    copy_with_exec_start(source, copy, script_name)

    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="cat")
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=unit_dir,
        env=env,
        check=False,
    )
    output = proc.stdout + proc.stderr
    # Lines about our units name the unit ("isthmus-...service: ...") or its
    # file ("/tmp/.../isthmus-...service:12: ...").
    markers = (copy_name, str(unit_dir), source.name)
    complaints = [line for line in output.splitlines() if any(m in line for m in markers)]
    assert not complaints, f"systemd-analyze verify {copy_name}:\n" + "\n".join(complaints)
    assert proc.returncode == 0, f"systemd-analyze verify {copy_name} exited {proc.returncode}:\n{output}"
