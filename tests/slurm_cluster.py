"""A real single-node Slurm cluster with accounting, for tests (Debian's Slurm 22.05, as root, no cgroups).

Starts, as root and without cgroups, MariaDB -> slurmdbd -> slurmctld -> slurmd (plus munged when
none answers), every daemon in the foreground of its own session, with its PID recorded; state,
spool, logs, the database and the configuration all live under one directory. ``stop`` cancels
every job and then stops the daemons by those PIDs, newest first. Debian packages are installed
with apt-get when missing (slurmctld slurmd slurm-client munge slurmdbd mariadb-server).

Why these settings: accounting (slurmdbd + MariaDB) because without it ``sacct`` fails and the
submitit launcher waits forever on a task that died without writing its result (with it, a killed
task surfaces as an error in about 30 s); ``DefMemPerCPU`` because without it every job takes all
the memory and array tasks run one by one; ``SlurmdParameters=config_overrides`` so that the node
may declare more CPUs than the machine has (several small array tasks run together);
``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` because there are no cgroups;
``KillWait=5`` so that a cancelled task is killed 5 s after its SIGTERM. Do not restart the daemons
while jobs run (the node drains; ``scontrol update nodename=<host> state=resume`` recovers).

Library use (the pytest fixture in test_slurm.py)::

    cluster = start_cluster(root)          # raises ClusterUnavailable with the reason
    subprocess.run(["sbatch", ...], env=cluster.env)
    cluster.stop()

Command line (a cluster to try the launcher or slurm/array.sbatch by hand)::

    python tests/slurm_cluster.py start /tmp/slurm   # prints `export SLURM_CONF=...`
    python tests/slurm_cluster.py stop /tmp/slurm
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DEBIAN_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge", "slurmdbd", "mariadb-server")
REQUIRED_PROGRAMS = (
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "sbatch",
    "sacct",
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
)
PROGRAM_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
INSTALL_TIMEOUT_S = 900
STATE_FILE = "cluster.json"
PARTITION = "debug"
DATABASE = "slurm_acct_db"
DB_USER = "slurm"
DB_PASSWORD = "slurm-test"


class ClusterUnavailable(RuntimeError):
    """No cluster could be started here; the message says why (used as the skip reason)."""


# ---------------------------------------------------------------------------------------------
# Packages


def find_program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in PROGRAM_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def missing_programs() -> list[str]:
    return [name for name in REQUIRED_PROGRAMS if find_program(name) is None]


def ensure_packages(timeout_s: float = INSTALL_TIMEOUT_S) -> float:
    """Install the Debian packages when a program is missing; returns the seconds spent."""
    if not missing_programs():
        return 0.0
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            f"Slurm programs missing ({', '.join(missing_programs())}) and not root to install them"
        )
    apt = find_program("apt-get")
    if apt is None:
        raise ClusterUnavailable(f"Slurm programs missing ({', '.join(missing_programs())}) and no apt-get")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", "--no-install-recommends", *DEBIAN_PACKAGES]):
        remaining = timeout_s - (time.monotonic() - started)
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=max(remaining, 1))
        except subprocess.TimeoutExpired:
            raise ClusterUnavailable(f"`{' '.join(command)}` did not finish within {timeout_s:.0f} s") from None
        if done.returncode != 0:
            raise ClusterUnavailable(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    if missing_programs():
        raise ClusterUnavailable(f"still missing after apt-get install: {', '.join(missing_programs())}")
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# The cluster


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def total_memory_mb() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)


@dataclass
class SlurmCluster:
    """A running cluster: its directory, the environment clients need, and its daemons' PIDs."""

    root: Path
    hostname: str
    cpus: int
    memory_mb: int
    # (name, pid) in start order; stop() goes through them newest first.
    daemons: list[tuple[str, int]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF: what sbatch, squeue, sacct and the submitit launcher need."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def log(self, name: str) -> Path:
        return self.root / "log" / f"{name}.log"

    def command(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"`{' '.join(args)}` failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def node_state(self) -> str:
        done = self.command("sinfo", "-h", "-o", "%T", check=False, timeout=20)
        return done.stdout.strip() if done.returncode == 0 else ""

    def job_ids(self) -> list[str]:
        done = self.command("squeue", "-h", "-o", "%i", check=False, timeout=20)
        return done.stdout.split() if done.returncode == 0 else []

    def cancel_all(self, timeout_s: float = 60) -> None:
        """Cancel every job and wait until the queue is empty (or the timeout passes)."""
        if not self.job_ids():
            return
        self.command("scancel", "--full", "--user", pwd.getpwuid(os.geteuid()).pw_name, check=False)
        deadline = time.monotonic() + timeout_s
        while self.job_ids() and time.monotonic() < deadline:
            time.sleep(1)

    def save(self) -> None:
        state = {"hostname": self.hostname, "cpus": self.cpus, "memory_mb": self.memory_mb, "daemons": self.daemons}
        (self.root / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, root: Path) -> SlurmCluster:
        state = json.loads((root / STATE_FILE).read_text())
        return cls(
            root=root,
            hostname=state["hostname"],
            cpus=state["cpus"],
            memory_mb=state["memory_mb"],
            daemons=[(name, pid) for name, pid in state["daemons"]],
        )

    def stop(self, timeout_s: float = 30) -> None:
        """Cancel all jobs, then stop the recorded daemons, newest first (TERM, then KILL)."""
        if any(name == "slurmctld" for name, _ in self.daemons):
            try:
                self.cancel_all()
            except (OSError, subprocess.TimeoutExpired):
                pass
        for _name, pid in reversed(self.daemons):
            stop_process(pid, timeout_s)
        self.daemons.clear()
        (self.root / STATE_FILE).unlink(missing_ok=True)

    def tails(self, lines: int = 15) -> str:
        """The last lines of every daemon log (for error messages)."""
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process(pid: int, timeout_s: float = 30) -> None:
    if not _alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + 10:
            time.sleep(0.2)


def _spawn(
    cluster: SlurmCluster,
    name: str,
    args: list[str],
    *,
    user: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start a daemon in the foreground of its own session; its PID is recorded at once."""
    output = open(cluster.root / "log" / f"{name}.out", "ab")
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**cluster.env, **(extra_env or {})},
        user=user,
        group=user,
    )
    output.close()
    cluster.daemons.append((name, process.pid))
    cluster.save()
    return process


def _wait_for(what: str, check, process: subprocess.Popen | None, cluster: SlurmCluster, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            raise ClusterUnavailable(f"{what} exited with code {process.returncode}\n{cluster.tails()}")
        time.sleep(0.3)
    raise ClusterUnavailable(f"{what} not ready within {timeout_s:.0f} s\n{cluster.tails()}")


def _munge_works() -> bool:
    munge, unmunge = find_program("munge"), find_program("unmunge")
    if not (munge and unmunge):
        return False
    try:
        credential = subprocess.run([munge, "-n"], capture_output=True, timeout=10)
        if credential.returncode != 0:
            return False
        decoded = subprocess.run([unmunge], input=credential.stdout, capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return decoded.returncode == 0


def _start_munge(cluster: SlurmCluster, timeout_s: float) -> None:
    """Reuse a munged that answers; else start one as the munge user on the default socket."""
    if _munge_works():
        return
    munge_user = pwd.getpwnam("munge")
    run_dir = Path("/run/munge")
    run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chown(run_dir, munge_user.pw_uid, munge_user.pw_gid)
    process = _spawn(cluster, "munged", [find_program("munged"), "--foreground", "--force"], user="munge")
    _wait_for("munged", _munge_works, process, cluster, timeout_s)


def _write_database_files(cluster: SlurmCluster) -> None:
    (cluster.root / "mysql").mkdir()
    done = subprocess.run(
        [
            find_program("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={cluster.root / 'mysql' / 'data'}",
            "--user=root",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise ClusterUnavailable(f"mariadb-install-db failed ({done.returncode}): {done.stderr.strip()[-800:]}")


def _start_database(cluster: SlurmCluster, timeout_s: float) -> Path:
    """MariaDB without networking (a socket under root), with a database and user for slurmdbd."""
    _write_database_files(cluster)
    sock = cluster.root / "mysql" / "mysqld.sock"
    process = _spawn(
        cluster,
        "mariadbd",
        [
            find_program("mariadbd"),
            "--no-defaults",
            f"--datadir={cluster.root / 'mysql' / 'data'}",
            f"--socket={sock}",
            f"--pid-file={cluster.root / 'mysql' / 'mariadbd.pid'}",
            "--skip-networking",
            "--user=root",
            f"--log-error={cluster.log('mariadbd')}",
            "--innodb-buffer-pool-size=64M",
            "--skip-log-bin",
        ],
    )
    client = [find_program("mariadb"), "--no-defaults", f"--socket={sock}", "-u", "root"]

    def answers() -> bool:
        return subprocess.run([*client, "-e", "SELECT 1"], capture_output=True, timeout=20).returncode == 0

    _wait_for("mariadbd", answers, process, cluster, timeout_s)
    statements = (
        f"CREATE DATABASE IF NOT EXISTS {DATABASE}; "
        f"CREATE USER IF NOT EXISTS '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASSWORD}'; "
        f"GRANT ALL ON {DATABASE}.* TO '{DB_USER}'@'localhost'; FLUSH PRIVILEGES;"
    )
    done = subprocess.run([*client, "-e", statements], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ClusterUnavailable(f"creating the accounting database failed: {done.stderr.strip()}")
    return sock


def _write_slurm_configs(cluster: SlurmCluster, ports: dict[str, int]) -> None:
    root, host = cluster.root, cluster.hostname
    for sub in ("etc", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cluster.conf.write_text(f"""\
# Written by tests/slurm_cluster.py: one node, accounting through slurmdbd, no cgroups.
ClusterName=acmtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ports["slurmctld"]}
SlurmdPort={ports["slurmd"]}
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={root / "state"}
SlurmdSpoolDir={root / "spool"}
SlurmctldPidFile={root / "state" / "slurmctld.pid"}
SlurmdPidFile={root / "spool" / "slurmd.pid"}
SlurmctldLogFile={cluster.log("slurmctld")}
SlurmdLogFile={cluster.log("slurmd")}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
KillWait=5
MinJobAge=3600
ReturnToService=2
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost={host}
AccountingStoragePort={ports["slurmdbd"]}
JobCompType=jobcomp/none
NodeName={host} CPUs={cluster.cpus} RealMemory={cluster.memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    dbd_conf = root / "etc" / "slurmdbd.conf"
    dbd_conf.write_text(f"""\
AuthType=auth/munge
DbdHost={host}
DbdPort={ports["slurmdbd"]}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc={DATABASE}
StorageUser={DB_USER}
StoragePass={DB_PASSWORD}
LogFile={cluster.log("slurmdbd")}
PidFile={root / "state" / "slurmdbd.pid"}
""")
    dbd_conf.chmod(0o600)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_cluster(
    root: str | os.PathLike, *, cpus: int = 4, memory_mb: int | None = None, timeout_s: float = 90, install: bool = True
) -> SlurmCluster:
    """Install (when missing) and start a one-node cluster under ``root``; ClusterUnavailable if not.

    ``cpus`` is what the node declares (SlurmdParameters=config_overrides lets it claim more than
    the machine has, so that several small array tasks run together); ``memory_mb`` defaults to
    the machine's memory minus 1 GB.
    """
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting slurmctld/slurmd/slurmdbd/MariaDB needs root")
    if install:
        ensure_packages()
    elif missing_programs():
        raise ClusterUnavailable(f"Slurm programs missing: {', '.join(missing_programs())}")
    root = Path(root).absolute()
    if (root / STATE_FILE).exists():
        raise ClusterUnavailable(f"{root} already holds a cluster ({STATE_FILE}); stop it first")
    if root.exists() and any(root.iterdir()):
        raise ClusterUnavailable(f"{root} is not empty; give a new or empty directory")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    cluster = SlurmCluster(
        root=root,
        hostname=socket.gethostname().split(".")[0],
        cpus=cpus,
        memory_mb=memory_mb or max(total_memory_mb() - 1024, 1024),
    )
    ports = dict(zip(("slurmctld", "slurmd", "slurmdbd"), free_ports(3), strict=False))
    _write_slurm_configs(cluster, ports)
    cluster.save()
    try:
        _start_munge(cluster, timeout_s)
        database_socket = _start_database(cluster, timeout_s)
        # libmariadb (slurmdbd's client) takes the socket of StorageHost=localhost from this variable.
        dbd = _spawn(
            cluster, "slurmdbd", [find_program("slurmdbd"), "-D"], extra_env={"MYSQL_UNIX_PORT": str(database_socket)}
        )
        _wait_for("slurmdbd", lambda: _port_open(ports["slurmdbd"]), dbd, cluster, timeout_s)
        ctld = _spawn(cluster, "slurmctld", [find_program("slurmctld"), "-D", "-i", "-f", str(cluster.conf)])
        _wait_for(
            "slurmctld",
            lambda: cluster.command("scontrol", "ping", check=False, timeout=10).returncode == 0,
            ctld,
            cluster,
            timeout_s,
        )
        slurmd = _spawn(cluster, "slurmd", [find_program("slurmd"), "-D", "-f", str(cluster.conf)])
        _wait_for("the node (sinfo idle)", lambda: cluster.node_state() == "idle", slurmd, cluster, timeout_s)
        _wait_for(
            "accounting (sacct)",
            lambda: cluster.command("sacct", "-n", "-X", check=False, timeout=10).returncode == 0,
            None,
            cluster,
            timeout_s,
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("root", type=Path, help="directory for the cluster's configuration, state and logs")
    parser.add_argument("--cpus", type=int, default=4, help="CPUs the node declares (default 4)")
    args = parser.parse_args(argv)
    if args.action == "stop":
        SlurmCluster.load(args.root.absolute()).stop()
        print(f"stopped the cluster in {args.root}")
        return 0
    try:
        started = time.monotonic()
        cluster = start_cluster(args.root, cpus=args.cpus)
    except ClusterUnavailable as error:
        print(f"no cluster: {error}", file=sys.stderr)
        return 1
    print(
        f"cluster up in {time.monotonic() - started:.1f} s; daemons: "
        + ", ".join(f"{name}={pid}" for name, pid in cluster.daemons)
    )
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
