"""A real single-node SLURM cluster for the tests: munged, slurmctld and slurmd as root, state in a temp dir.

Debian's slurm-wlm and munge are installed by .ci/run. Nothing here fakes SLURM: jobs are really submitted
with sbatch and run by slurmd on this machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from services import INSTALL_SERVICES, MISSING_SERVICE

DAEMONS = ("munged", "slurmctld", "slurmd")
CONTROLLER_PORT, NODE_PORT = 16817, 16818
DEFAULT_MEMORY_PER_CPU_MB = 2048


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return f"{MISSING_SERVICE} SLURM: the test cluster runs its daemons as root"
    missing = [d for d in ("sbatch", "squeue", "scancel") if shutil.which(d) is None]
    missing += [d for d in DAEMONS if not Path(f"/usr/sbin/{d}").exists()]
    if missing:
        return f"{MISSING_SERVICE} SLURM: {', '.join(missing)} not installed ({INSTALL_SERVICES})"
    return None


def _config(folder: Path) -> str:
    host = socket.gethostname().split(".")[0]
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 2048
    return "\n".join(
        [
            "ClusterName=coffeadispatch",
            f"SlurmctldHost={host}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            f"StateSaveLocation={folder}/state",
            f"SlurmdSpoolDir={folder}/spool",
            f"SlurmctldPidFile={folder}/slurmctld.pid",
            f"SlurmdPidFile={folder}/slurmd.pid",
            f"SlurmctldLogFile={folder}/slurmctld.log",
            f"SlurmdLogFile={folder}/slurmd.log",
            f"SlurmctldPort={CONTROLLER_PORT}",
            f"SlurmdPort={NODE_PORT}",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            # memory is a consumable and enforced, as on real sites: a job over its --mem is killed within a
            # second (jobacct_gather polls every second; OverMemoryKill); DefMemPerCPU for jobs without --mem
            "SelectTypeParameters=CR_Core_Memory",
            f"DefMemPerCPU={DEFAULT_MEMORY_PER_CPU_MB}",
            "JobAcctGatherType=jobacct_gather/linux",
            "JobAcctGatherFrequency=task=1",
            "JobAcctGatherParams=OverMemoryKill",
            "KillWait=5",  # a job at its walltime gets SIGTERM, then SIGKILL this many seconds later
            "MpiDefault=none",
            "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none",
            f"NodeName={host} CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _start_munge() -> None:
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
        return
    for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        os.makedirs(folder, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    if not Path("/etc/munge/munge.key").exists():
        subprocess.run(["/usr/sbin/mungekey", "--create"], check=True)
        shutil.chown("/etc/munge/munge.key", "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)


class SlurmCluster:
    def __init__(self, folder: Path):
        self.folder = folder
        self.config = folder / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.config)}

    def start(self, timeout: float = 60) -> None:
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.config.write_text(_config(self.folder))
        _start_munge()
        subprocess.run(["/usr/sbin/slurmctld", "-f", str(self.config)], check=True)
        subprocess.run(["/usr/sbin/slurmd", "-f", str(self.config)], check=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = subprocess.run(
                ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env={**os.environ, **self.env}
            )
            if state.returncode == 0 and state.stdout.strip() in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"SLURM did not come up; see {self.folder}/slurmctld.log and slurmd.log")

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user", "root"], env={**os.environ, **self.env}, capture_output=True)
        for pid_file in ("slurmd.pid", "slurmctld.pid"):
            path = self.folder / pid_file
            if path.exists():
                subprocess.run(["kill", path.read_text().strip()], capture_output=True)
