"""A third batch system, written the way a PBS or LSF backend would be: one module, one BatchBackend subclass,
declared under the `coffea_dispatch.backends` entry-point group (by the contract tests, from outside the source
tree). Its scheduler is tests/fake_scheduler.py: `toy-submit <log stem> <script> <job numbers...>`."""

from __future__ import annotations

from coffea_dispatch.batch.backend import BatchBackend, Groups, JobState
from coffea_dispatch.batch.submission import Job, Submission, number_in_script, script_groups, write_scripts


class Toy(BatchBackend):
    name = "Toy"
    array_executor = "vanilla_toy"
    submit_command = "toy-submit"
    queue_command = "toy-queue"
    cancel_command = "toy-cancel"
    native_states = {"WAITING": JobState.PENDING, "RUNNING": JobState.RUNNING}

    def write_files(self, submission: Submission) -> Groups:
        groups = write_scripts(submission, submission.jobs)
        return [(submission.jobs_folder / f"{stem}.sh", jobs) for stem, jobs in groups.items()]

    def resubmit_files(self, submission: Submission, jobs: list[Job], attempt: int) -> Groups:
        groups = script_groups(submission, jobs)
        return [(submission.jobs_folder / f"{stem}.sh", group) for stem, group in groups.items()]

    def submit_commands(self, submission: Submission, groups: Groups) -> list[list[str]]:
        return [
            [self.submit_command, str(script.with_suffix("")), str(script)]
            + [str(number_in_script(submission, job)) for job in jobs]
            for script, jobs in groups
        ]

    def parse_submit_output(self, output: str) -> str | None:
        words = output.split()
        return words[2] if len(words) == 3 and words[:2] == ["toy", "job"] else None

    def queue_query(self, submission: Submission) -> list[str] | None:
        return [self.queue_command]

    def parse_queue(self, submission: Submission, text: str) -> dict[str, str]:
        by_number = {(job.cluster, str(number_in_script(submission, job))): job.name for job in submission.jobs}
        states = {}
        for line in text.splitlines():
            cluster, number, state = line.split()
            if (cluster, number) in by_number:
                states[by_number[cluster, number]] = state
        return states

    def cancel_commands(self, submission: Submission, jobs: list[Job]) -> list[list[str]]:
        return [[self.cancel_command, *(f"{job.cluster}.{number_in_script(submission, job)}" for job in jobs)]]

    def max_job_seconds(self, walltime_seconds: int, queue: str | None) -> int:
        return 3600
