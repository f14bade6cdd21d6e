"""`make demo`: a coordinator on its embedded etcd, three site agents, a full mesh, the status table.

As root (with CAP_NET_ADMIN) each site is a network namespace on a shared
underlay, its agent runs inside it with the real bgp and vxlan drivers, and the
demo shows BGP sessions Established and a ping across the VXLAN overlay.
Otherwise (or with --fake) the agents use the fake driver, and it says so.
It prints each isthmusctl command as it runs it, waits until every peering is
ESTABLISHED, prints the status, stops everything and exits 0 (1 on failure).
Nothing is left behind; running it again starts from scratch.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from isthmus.coordinator.etcd import free_port

BIN = Path(sys.executable).parent

SITES = [
    # name, kind, parent, endpoint address, AS
    ("region-one", "region", "", "192.0.2.1", 65001),
    ("region-two", "region", "", "192.0.2.2", 65002),
    ("cell-two-a", "cell", "region-two", "192.0.2.3", 65003),
]


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")


def namespaces_usable() -> str:
    """Why the kernel demo cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "not running as root"
    for tool in ("ip", "ping"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    probe = f"isthmus-demo-probe-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "cannot create network namespaces (CAP_NET_ADMIN missing?)"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return ""


class Lab:
    """The demo's network: an underlay namespace with a bridge, a namespace per site, a host behind each."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:4]
        self.spaces: list[str] = []

    def ns(self, name: str) -> str:
        full = f"isd{self.tag}-{name}"
        _ip("netns", "add", full)
        self.spaces.append(full)
        _ip("-n", full, "link", "set", "lo", "up")
        return full

    def veth(self, a: str, a_if: str, b: str, b_if: str) -> None:
        tmp = f"vd{uuid.uuid4().hex[:8]}"
        _ip("link", "add", tmp, "type", "veth", "peer", "name", a_if, "netns", a)
        _ip("link", "set", tmp, "netns", b)
        _ip("-n", b, "link", "set", tmp, "name", b_if)
        _ip("-n", a, "link", "set", a_if, "up")
        _ip("-n", b, "link", "set", b_if, "up")

    def build(self, sites: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
        """Sites as namespaces on one underlay (192.0.2.0/24); returns site -> (site ns, host ns)."""
        under = self.ns("underlay")
        _ip("-n", under, "link", "add", "br0", "type", "bridge")
        _ip("-n", under, "link", "set", "br0", "up")
        out = {}
        for i, (site, address) in enumerate(sites):
            ns = self.ns(site[:10])
            self.veth(ns, "eth0", under, f"p{i}")
            _ip("-n", under, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "add", "br-ovl", "type", "bridge")
            _ip("-n", ns, "link", "set", "br-ovl", "up")
            host = self.ns(f"host{i + 1}")
            self.veth(host, "eth0", ns, "h0")
            _ip("-n", ns, "link", "set", "h0", "master", "br-ovl")
            _ip("-n", host, "addr", "add", f"10.200.0.{i + 1}/24", "dev", "eth0")
            out[site] = (ns, host)
        return out

    def close(self) -> None:
        for ns in reversed(self.spaces):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (zombies included until their parent reaps them)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            out.append(int(entry.name))
    return out


class Demo:
    def __init__(self, workdir: Path, timeout: float, kernel: bool = False) -> None:
        self.workdir = workdir
        self.timeout = timeout
        self.kernel = kernel
        self.lab = Lab() if kernel else None
        self.hosts: dict[str, str] = {}
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.address = f"127.0.0.1:{free_port()}"
        self.unix = f"unix:{workdir / 'coordinator.sock'}"
        self.pki_dir = workdir / "pki"
        self.env = dict(os.environ)

    def start(self, name: str, args: list[str], netns: str = "") -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (handed to the child)
        if netns:
            args = ["ip", "netns", "exec", netns, *args]
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        print(f"  started {name} (pid {proc.pid}), log in {self.workdir / (name + '.log')}")

    def ctl(self, *args: str, show: bool = True, coordinator: bool = True) -> str:
        cmd = [str(BIN / "isthmusctl"), *(["--coordinator", self.address] if coordinator else []), *args]
        if show:
            print("$ isthmusctl " + " ".join(shlex.quote(a) for a in args))
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout + 30, env=self.env)
        if res.returncode != 0:
            raise RuntimeError(res.stderr.strip() or f"isthmusctl {' '.join(args)} failed")
        if show and res.stdout.strip():
            print(res.stdout.rstrip())
        return res.stdout

    def wait_coordinator(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.workdir / (name + '.log')}")
            try:
                self.ctl("site", "list", show=False)
                return
            except RuntimeError:
                time.sleep(0.2)
        raise RuntimeError(f"the coordinator did not answer on {self.address} within {self.timeout}s")

    def wait_routes(self) -> None:
        """Wait until every BGP session has received the other sites' prefixes."""
        deadline = time.monotonic() + self.timeout
        while True:
            statuses = json.loads(self.ctl("status", "-o", "json", show=False))
            waiting = [p["desired"]["connection"] for st in statuses for p in st.get("peerings", [])
                       if p.get("desired", {}).get("type") == "CONNECTION_TYPE_BGP"
                       and not p.get("observed", {}).get("received_prefixes")]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no prefixes received yet on {', '.join(sorted(set(waiting)))}")
            time.sleep(0.2)

    def ping(self, site_from: str, address: str) -> bool:
        assert self.lab is not None
        res = subprocess.run(["ip", "netns", "exec", self.hosts[site_from], "ping", "-c", "1", "-W", "1", address],
                             capture_output=True, text=True, timeout=10)
        return res.returncode == 0

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop on SIGTERM; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # What it started in its own session (the coordinator's etcd) is gone too before the demo says so.
            deadline = time.monotonic() + 10
            while _group_members(proc.pid):
                if time.monotonic() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    deadline = time.monotonic() + 5
                time.sleep(0.05)
        if self.lab is not None:
            self.lab.close()

    def pki(self) -> None:
        """The secure set-up in three commands: a CA, the coordinator's certificate, one per agent (and us)."""
        print("== mutual TLS: a CA and certificates for the coordinator, each site's agent and the operator")
        self.ctl("pki", "init", "--dir", str(self.pki_dir), coordinator=False)
        self.ctl("pki", "issue", "coordinator", "demo", "--dir", str(self.pki_dir), coordinator=False)
        for site, *_ in SITES:
            self.ctl("pki", "issue", "agent", site, "--dir", str(self.pki_dir), coordinator=False, show=False)
        print(f"$ isthmusctl pki issue agent SITE   (for {', '.join(s[0] for s in SITES)})")
        self.ctl("pki", "issue", "operator", "demo-admin", "--role", "admin", "--dir", str(self.pki_dir),
                 coordinator=False, show=False)
        # isthmusctl takes its certificate from the environment: the commands below stay short.
        self.env.update(ISTHMUS_TLS_CA=str(self.pki_dir / "ca.pem"),
                        ISTHMUS_TLS_CERT=str(self.pki_dir / "operator-demo-admin.pem"),
                        ISTHMUS_TLS_KEY=str(self.pki_dir / "operator-demo-admin.key"))
        print(f"$ export ISTHMUS_TLS_CA={self.pki_dir}/ca.pem ISTHMUS_TLS_CERT=... ISTHMUS_TLS_KEY=...  "
              "(operator demo-admin, role admin)\n")

    def tls(self, kind: str, name: str) -> list[str]:
        return ["--tls-ca", str(self.pki_dir / "ca.pem"), "--tls-cert", str(self.pki_dir / f"{kind}-{name}.pem"),
                "--tls-key", str(self.pki_dir / f"{kind}-{name}.key")]

    def run(self) -> None:
        drivers = "bgp,vxlan" if self.kernel else "fake"
        where = "each in its own network namespace" if self.kernel else "on loopback"
        self.pki()
        print(f"== starting a coordinator (embedded etcd) on {self.address} and three agents ({drivers}), {where}")
        listen = f"{self.address},{self.unix}" if self.kernel else self.address
        self.start("coordinator", [str(BIN / "isthmus-coordinator"), "--listen", listen,
                                   "--data-dir", str(self.workdir / "coordinator"), *self.tls("coordinator", "demo")])
        spaces: dict[str, tuple[str, str]] = {}
        if self.lab is not None:
            spaces = self.lab.build([(site, address) for site, _, _, address, _ in SITES])
            self.hosts = {site: host for site, (_, host) in spaces.items()}
        for site, *_ in SITES:
            opts = (["--driver-opt", "vxlan.bridge=br-ovl"] if self.kernel
                    else ["--driver-opt", "fake.connect_delay=0.5"])
            self.start(f"agent-{site}", [
                str(BIN / "isthmus-agent"), "--site", site, "--coordinator", self.unix if self.kernel else self.address,
                "--driver", drivers, *opts, "--state-dir", str(self.workdir / site),
                "--admin-socket", str(self.workdir / site / "admin.sock"), "--reconcile-interval", "2",
                *self.tls("agent", site),
            ], netns=spaces[site][0] if spaces else "")
        self.wait_coordinator()

        print("\n== sites, endpoints, and a full mesh of BGP connections (plus one VXLAN tunnel)")
        for site, kind, parent, _, _ in SITES:
            self.ctl("site", "create", site, "--kind", kind, *(["--parent", parent] if parent else []))
        for i, (site, _, _, address, asn) in enumerate(SITES):
            # Each site advertises a prefix of its own over BGP: the RECEIVED column counts the others'.
            self.ctl("endpoint", "create", f"{site}/gw", "--address", address, "--asn", str(asn),
                     "--property", f"bgp.advertise=10.{i + 1}.0.0/16")
        # An OpenStack instance that runs no isthmus agent: its endpoint is REMOTE, region-one peers with it.
        self.ctl("site", "create", "partner-cloud", "--kind", "instance", "--description", "runs no isthmus agent")
        self.ctl("endpoint", "create", "partner-cloud/border", "--address", "198.51.100.1", "--asn", "64999",
                 "--role", "remote")
        names = [s[0] for s in SITES]
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                self.ctl("connection", "create", f"{a}--{b}", "--a", f"{a}/gw", "--b", f"{b}/gw", "--type", "bgp")
        if not self.kernel:
            # Nobody answers at partner-cloud's address in the kernel demo: only the fake driver shows it.
            self.ctl("connection", "create", "region-one--partner", "--a", "region-one/gw", "--b",
                     "partner-cloud/border", "--type", "bgp", "--hold-time", "30")
        vni = 1001
        for i, a in enumerate(names):
            for b in names[i + 1:] if self.kernel else names[1:2] if i == 0 else []:
                self.ctl("connection", "create", f"{a}--{b}-l2", "--a", f"{a}/gw", "--b", f"{b}/gw",
                         "--type", "vxlan", "--vni", str(vni))
                vni += 1

        print("\n== waiting until every peering is ESTABLISHED at every site")
        self.ctl("status", "--wait-established", "--wait-timeout", str(int(self.timeout)))
        print()
        self.ctl("status", "region-two")
        if self.kernel:
            self.wait_routes()
            print("\n== hosts behind each site's bridge, across the VXLAN overlay")
            deadline = time.monotonic() + self.timeout
            for target in ("10.200.0.2", "10.200.0.3"):
                while not self.ping("region-one", target):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"host of region-one cannot reach {target} across the overlay")
                    time.sleep(0.2)
                print(f"$ ip netns exec <host of region-one> ping {target}: reachable")
        print("\n== the same, asked of region-one's agent on its admin socket (works without the coordinator)")
        sock = self.workdir / "region-one" / "admin.sock"
        print(f"$ isthmusctl local --socket {sock} peerings")
        res = subprocess.run([str(BIN / "isthmusctl"), "local", "--socket", str(sock), "peerings"],
                             capture_output=True, text=True, timeout=30, env=self.env)
        if res.returncode != 0:
            raise RuntimeError(res.stderr.strip())
        print(res.stdout.rstrip())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="isthmus-demo", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for convergence (default 60)")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, state) afterwards")
    p.add_argument("--fake", action="store_true", help="use the fake driver even when network namespaces work")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="isthmus-demo-"))
    why = "--fake given" if args.fake else namespaces_usable()
    if why:
        print(f"(fake driver: {why}; as root the demo runs the real bgp and vxlan drivers in network namespaces)")
    demo = Demo(workdir, args.timeout, kernel=not why)
    code = 0
    try:
        demo.run()
        print("\n== demo converged: every peering ESTABLISHED; stopping everything")
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"\ndemo failed: {exc}\nlogs: {workdir}", file=sys.stderr)
        code = 1
        args.keep = True
    finally:
        demo.stop_all()
    if args.keep:
        print(f"working directory kept: {workdir}")
    else:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    sys.exit(code)


if __name__ == "__main__":
    main()
