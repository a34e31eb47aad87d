"""A throw-away one-node SLURM cluster on this host (localhost only), for tests.

Debian's ``slurm-wlm`` and ``munge`` are installed with apt-get when missing. A private
``munged`` (own key, own socket), ``slurmctld`` and ``slurmd`` then run on free ports with their
state, spool and logs in a temporary directory, without accounting (no slurmdbd): job states
come from ``squeue``, which keeps finished jobs for ``MinJobAge`` seconds.

The one file written outside that directory is ``/etc/slurm/slurm.conf``: the executor plugin's
job step drops ``SLURM_CONF`` from the environment of the ``srun`` it runs inside each job, so
``srun`` only finds its configuration at the default path. It is written only where no SLURM
configuration exists (or one left by this module) and removed again on stop. Stopping cancels
the cluster's jobs and ends exactly the daemons started here, by their process ids.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SLURM_CONF = Path("/etc/slurm/slurm.conf")
LOCK = Path(tempfile.gettempdir()) / "gmmpipe-slurm-test.lock"
MARKER = "# Written by gmmpipe's tests/slurm_cluster.py for a throw-away test cluster."
PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
PARTITION = "debug"
NODE = "localhost"

REQUIREMENT = (
    "needs root on Debian with apt-get (or slurm-wlm and munge already installed) and no SLURM "
    f"configuration of its own in {SLURM_CONF}"
)


def unavailable_reason() -> str | None:
    """Why a test cluster cannot run here, or None when it can."""
    if not sys.platform.startswith("linux") or not Path("/etc/debian_version").exists():
        return "not a Debian system"
    if os.geteuid() != 0:
        return "not running as root"
    if SLURM_CONF.exists() and MARKER not in SLURM_CONF.read_text(errors="replace"):
        return f"{SLURM_CONF} belongs to a real SLURM installation; not touching it"
    if _missing_binaries() and shutil.which("apt-get") is None:
        return "slurm-wlm/munge are not installed and apt-get is not available"
    return None


def _missing_binaries() -> list[str]:
    return [name for name in BINARIES if _which(name) is None]


def _which(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
    return shutil.which(name, path=path)


def ensure_installed() -> None:
    """Install Debian's slurm-wlm and munge when any of their programs is missing."""
    if not _missing_binaries():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:  # stale or missing package lists: refresh once and retry
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 or _missing_binaries():
        raise RuntimeError(
            f"`{' '.join(install)}` failed (exit {result.returncode}); still missing: "
            f"{', '.join(_missing_binaries())}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node_hardware() -> str:
    """This host's CPU layout as `slurmd -C` reports it (Boards=, CoresPerSocket=, ...)."""
    line = subprocess.run(
        [_which("slurmd") or "slurmd", "-C"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    return " ".join(
        token for token in line.split() if not token.startswith(("NodeName=", "RealMemory="))
    )


def _memory_mb() -> int:
    """90% of this host's memory in MB (what the node offers to jobs)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.9)
    raise RuntimeError("MemTotal not found in /proc/meminfo")


@dataclass
class Job:
    """One SLURM job as `squeue --states=all` reports it."""

    id: int
    name: str
    state: str
    cpus: int
    memory: str
    comment: str


@dataclass
class Cluster:
    """A one-node SLURM cluster whose daemons this process started (see :func:`one_node`)."""

    root: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    wrote_conf: bool = False

    def conf_text(self) -> str:
        r = self.root
        return "\n".join(
            [
                MARKER,
                "ClusterName=gmmpipe-test",
                f"SlurmctldHost={NODE}",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={r}/run/munge.socket",
                "MpiDefault=none",
                f"StateSaveLocation={r}/state",
                f"SlurmdSpoolDir={r}/spool",
                f"SlurmctldPidFile={r}/run/slurmctld.pid",
                f"SlurmdPidFile={r}/run/slurmd.pid",
                f"SlurmctldLogFile={r}/log/slurmctld.log",
                f"SlurmdLogFile={r}/log/slurmd.log",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                # squeue must still see finished jobs when the executor asks (>= 3 x its delay)
                # and when a test lists them after a run that took many minutes on a busy host.
                "MinJobAge=3600",
                "MailProg=/bin/true",
                "ReturnToService=2",
                f"NodeName={NODE} NodeAddr=127.0.0.1 {_node_hardware()} "
                f"RealMemory={_memory_mb()} State=UNKNOWN",
                f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def start(self, timeout: float = 60) -> None:
        """Write the configuration, start munged, slurmctld and slurmd, wait for an idle node."""
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(f"cannot start a test SLURM cluster: {reason}")
        for sub in ("munge", "run", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # munged insists on a private key and a socket directory everybody can traverse.
        os.chmod(self.root, 0o755)
        os.chmod(self.root / "run", 0o755)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        subprocess.run([_which("mungekey") or "mungekey", "-c", "-k", str(key)], check=True)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(self.conf_text())
        self.wrote_conf = True

        socket_path = self.root / "run" / "munge.socket"
        self._spawn(
            "munged",
            "-F",
            f"--key-file={key}",
            f"--socket={socket_path}",
            f"--pid-file={self.root}/run/munged.pid",
            f"--log-file={self.root}/log/munged.log",
            f"--seed-file={self.root}/munge/munged.seed",
        )
        self._wait(lambda: socket_path.exists(), "munged to create its socket", timeout)
        self._spawn("slurmctld", "-D", "-i")
        self._wait(
            lambda: self.command("sinfo", "-h", check=False).returncode == 0,
            "slurmctld to answer",
            timeout,
        )
        self._spawn("slurmd", "-D", "-N", NODE)
        self._wait(self._node_idle, f"node {NODE} to become idle", timeout)

    def _spawn(self, daemon: str, *args: str) -> None:
        log = (self.root / "log" / f"{daemon}.out").open("wb")
        self.processes[daemon] = subprocess.Popen(
            [_which(daemon) or daemon, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # not hit by the terminal's Ctrl-C before teardown runs
        )
        log.close()

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [name for name, proc in self.processes.items() if proc.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}\n{self}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{self}")

    def _node_idle(self) -> bool:
        result = self.command("sinfo", "-h", "-n", NODE, "-o", "%T", check=False)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command against this cluster."""
        env = {**os.environ, "SLURM_CONF": str(SLURM_CONF)}
        return subprocess.run(
            [_which(args[0]) or args[0], *args[1:]],
            env=env,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def jobs(self) -> list[Job]:
        """Every job the controller still knows (finished ones for MinJobAge seconds)."""
        out = self.command(
            "squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%C|%m|%k"
        ).stdout
        jobs = []
        for line in out.splitlines():
            job_id, name, state, cpus, memory, comment = line.split("|", 5)
            jobs.append(Job(int(job_id), name, state, int(cpus), memory, comment))
        return sorted(jobs, key=lambda job: job.id)

    def stop(self) -> None:
        """Cancel the cluster's jobs, end the daemons started here, remove the configuration."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.command("scancel", "--user=root", check=False)
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and any(
                    job.state in ("RUNNING", "COMPLETING", "PENDING") for job in self.jobs()
                ):
                    time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self.wrote_conf and SLURM_CONF.exists() and MARKER in SLURM_CONF.read_text():
            SLURM_CONF.unlink()
            self.wrote_conf = False

    def logs(self, lines: int = 30) -> str:
        """The last lines of every daemon log, for failure messages."""
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def __str__(self) -> str:
        running = {name: proc.pid for name, proc in self.processes.items()}
        return f"test SLURM cluster in {self.root}, daemons {running}\n{self.logs()}"


@contextlib.contextmanager
def one_node() -> Iterator[Cluster]:
    """A started one-node cluster, stopped (and its directory removed) on exit, even on error.

    Test sessions on the same host take turns (they would share /etc/slurm/slurm.conf).
    """
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cluster = Cluster(Path(tempfile.mkdtemp(prefix="gmmpipe-slurm-")))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
            shutil.rmtree(cluster.root, ignore_errors=True)
