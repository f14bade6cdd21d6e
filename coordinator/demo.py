"""`make demo`: a coordinator on its embedded etcd, three site agents, a full mesh, the status table.

Runs everything from this installation on loopback with the fake driver,
prints each isthmusctl command as it runs it, waits until every peering is
ESTABLISHED, prints the status, stops everything and exits 0 (1 on failure).
Nothing is left behind; running it again starts from scratch.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from isthmus.coordinator.etcd import free_port

BIN = Path(sys.executable).parent

SITES = [
    # name, kind, parent, endpoint address, AS
    ("region-one", "region", "", "192.0.2.1", 65001),
    ("region-two", "region", "", "192.0.2.2", 65002),
    ("cell-two-a", "cell", "region-two", "192.0.2.3", 65003),
]


class Demo:
    def __init__(self, workdir: Path, timeout: float) -> None:
        self.workdir = workdir
        self.timeout = timeout
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.address = f"127.0.0.1:{free_port()}"

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (handed to the child)
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        print(f"  started {name} (pid {proc.pid}), log in {self.workdir / (name + '.log')}")

    def ctl(self, *args: str, show: bool = True) -> str:
        cmd = [str(BIN / "isthmusctl"), "--coordinator", self.address, *args]
        if show:
            print("$ isthmusctl " + " ".join(shlex.quote(a) for a in args))
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout + 30)
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

    def run(self) -> None:
        print(f"== starting a coordinator (embedded etcd) on {self.address} and three agents (fake driver)")
        self.start("coordinator", [str(BIN / "isthmus-coordinator"), "--listen", self.address,
                                   "--data-dir", str(self.workdir / "coordinator")])
        for site, *_ in SITES:
            self.start(f"agent-{site}", [
                str(BIN / "isthmus-agent"), "--site", site, "--coordinator", self.address, "--driver", "fake",
                "--driver-opt", "fake.connect_delay=0.5", "--state-dir", str(self.workdir / site),
                "--admin-socket", str(self.workdir / site / "admin.sock"),
            ])
        self.wait_coordinator()

        print("\n== sites, endpoints, and a full mesh of BGP connections (plus one VXLAN tunnel)")
        for site, kind, parent, _, _ in SITES:
            self.ctl("site", "create", site, "--kind", kind, *(["--parent", parent] if parent else []))
        for site, _, _, address, asn in SITES:
            self.ctl("endpoint", "create", f"{site}/gw", "--address", address, "--asn", str(asn))
        # An OpenStack instance that runs no isthmus agent: its endpoint is REMOTE, region-one peers with it.
        self.ctl("site", "create", "partner-cloud", "--kind", "instance", "--description", "runs no isthmus agent")
        self.ctl("endpoint", "create", "partner-cloud/border", "--address", "198.51.100.1", "--asn", "64999",
                 "--role", "remote")
        names = [s[0] for s in SITES]
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                self.ctl("connection", "create", f"{a}--{b}", "--a", f"{a}/gw", "--b", f"{b}/gw", "--type", "bgp")
        self.ctl("connection", "create", "region-one--partner", "--a", "region-one/gw", "--b",
                 "partner-cloud/border", "--type", "bgp", "--hold-time", "30")
        self.ctl("connection", "create", "one-two-l2", "--a", "region-one/gw", "--b", "region-two/gw",
                 "--type", "vxlan", "--vni", "1001")

        print("\n== waiting until every peering is ESTABLISHED at every site")
        self.ctl("status", "--wait-established", "--wait-timeout", str(int(self.timeout)))
        print()
        self.ctl("status", "region-two")
        print("\n== the same, asked of region-one's agent on its admin socket (works without the coordinator)")
        sock = self.workdir / "region-one" / "admin.sock"
        print(f"$ isthmusctl local --socket {sock} peerings")
        res = subprocess.run([str(BIN / "isthmusctl"), "local", "--socket", str(sock), "peerings"],
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(res.stderr.strip())
        print(res.stdout.rstrip())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="isthmus-demo", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for convergence (default 60)")
    p.add_argument("--keep", action="store_true", help="keep the working directory (logs, state) afterwards")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="isthmus-demo-"))
    demo = Demo(workdir, args.timeout)
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
