"""Test stand-ins for batch schedulers we cannot run here: HTCondor (no daemons can be installed) and "toy", the
third backend the contract tests add from outside the source tree. Never part of the product.

One script answers under every command name (condor_submit, condor_q, condor_rm, toy-submit, toy-queue,
toy-cancel): jobs run at submission, as the schedd or slurmd would run them (HTCondor's submit file is read with
the real htcondor2 bindings), unless `held` is on; held jobs wait in the state folder, are listed by the queue
command, removed by the cancel command, and run by `release`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

STATE = "FAKE_SCHEDULER_STATE"  # the folder holding the queue
COMMANDS = ("condor_submit", "condor_q", "condor_rm", "toy-submit", "toy-queue", "toy-cancel")


def _state() -> Path:
    return Path(os.environ[STATE])


def _queue() -> list[dict]:
    path = _state() / "queue.json"
    return json.loads(path.read_text()) if path.exists() else []


def _save(queue: list[dict]) -> None:
    (_state() / "queue.json").write_text(json.dumps(queue))


def _next_cluster() -> str:
    counter = _state() / "counter"
    number = int(counter.read_text()) + 1 if counter.exists() else 100
    counter.write_text(str(number))
    return str(number)


def _run(job: dict) -> None:
    with open(job["out"], "w") as out, open(job["err"], "w") as err:
        subprocess.run(job["argv"], stdout=out, stderr=err, check=False, timeout=600)


def _accept(jobs: list[dict]) -> None:
    if (_state() / "held").exists():
        _save(_queue() + jobs)
    else:
        for job in jobs:
            _run(job)


def condor_submit(argv: list[str]) -> str:
    import htcondor2

    text = Path(argv[-1]).read_text()
    cluster, jobs = _next_cluster(), []
    items = htcondor2.Submit(text).itemdata()
    items = list(items) if items is not None else []
    if not items:  # `queue N`
        items = [{"ProcId": str(proc)} for proc in range(int(htcondor2.Submit(text).getQArgs()))]
    for item in items:
        description = htcondor2.Submit(text)
        for key, value in item.items():
            description[key] = value
        argument = description.expand("arguments")
        jobs.append(
            {
                "cluster": cluster,
                "number": argument,
                "argv": [description.expand("executable"), argument],
                "out": description.expand("output"),
                "err": description.expand("error"),
            }
        )
    _accept(jobs)
    return f"Submitting job(s).\n{len(jobs)} job(s) submitted to cluster {cluster}.\n"


def toy_submit(argv: list[str]) -> str:
    logs, script, numbers = argv[1], argv[2], argv[3:]
    cluster = _next_cluster()
    jobs = [
        {
            "cluster": cluster,
            "number": n,
            "argv": ["bash", script, n],
            "out": f"{logs}.{n}.out",
            "err": f"{logs}.{n}.err",
        }
        for n in numbers
    ]
    _accept(jobs)
    return f"toy job {cluster}\n"


def queue_lines(condor: bool) -> str:
    return "".join(f"{j['cluster']} {j['number']} {j.get('status', '1') if condor else 'WAITING'}\n" for j in _queue())


def condor_q(argv: list[str]) -> str:
    """`-af ClusterId Args JobStatus` lines, or with -json the job ads (hold reasons of held jobs included)."""
    if "-json" not in argv:
        return queue_lines(condor=True)
    ads = [
        {"ClusterId": int(j["cluster"]), "Args": j["number"], "JobStatus": int(j.get("status", "1")), **j.get("ad", {})}
        for j in _queue()
    ]
    return json.dumps(ads, indent=2) + "\n" if ads else ""


def hold(ad: dict) -> None:
    """Every queued job is held, its job ad carrying `ad` (HoldReason, HoldReasonCode, ...): the schedd's view
    of jobs put on hold by the startd (memory) or a policy."""
    _save([{**j, "status": "5", "ad": ad} for j in _queue()])


def condor_rm(argv: list[str]) -> str:
    constraint = argv[argv.index("-constraint") + 1]
    cluster = re.search(r"ClusterId == (\d+)", constraint).group(1)
    numbers = set(re.findall(r'Args == "(\d+)"', constraint))
    _save([j for j in _queue() if not (j["cluster"] == cluster and j["number"] in numbers)])
    return "Jobs matching constraint have been marked for removal\n"


def toy_cancel(argv: list[str]) -> str:
    gone = set(argv[1:])
    _save([j for j in _queue() if f"{j['cluster']}.{j['number']}" not in gone])
    return ""


def release() -> None:
    """Run every held job (in this process's environment, with the state folder of STATE)."""
    (_state() / "held").unlink(missing_ok=True)
    queue = _queue()
    _save([job for job in queue if job.get("status") == "5"])  # held ones wait for condor_rm
    for job in queue:
        if job.get("status") != "5":
            _run(job)


@contextmanager
def held():
    (_state() / "held").touch()
    try:
        yield
    finally:
        (_state() / "held").unlink(missing_ok=True)


def install(folder: Path) -> dict[str, str]:
    """Every command name as an executable in `folder/bin`; the environment variables that select them."""
    bin_folder, state = folder / "bin", folder / "state"
    bin_folder.mkdir(parents=True, exist_ok=True)
    state.mkdir(exist_ok=True)
    for name in COMMANDS:
        command = bin_folder / name
        command.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "import fake_scheduler\nfake_scheduler.main(sys.argv)\n"
        )
        command.chmod(0o755)
    return {"PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}", STATE: str(state)}


def main(argv: list[str]) -> None:
    name = Path(argv[0]).name
    answers = {
        "condor_submit": condor_submit,
        "toy-submit": toy_submit,
        "condor_q": condor_q,
        "toy-queue": lambda a: queue_lines(condor=False),
        "condor_rm": condor_rm,
        "toy-cancel": toy_cancel,
    }
    sys.stdout.write(answers[name](argv))
