"""The system services some tests start for real (a SLURM cluster, an XRootD server): how a test says one is
missing, and the count `make test` ends with, so that a newcomer's run never skips them without a word."""

from __future__ import annotations

import re
from collections import Counter

MISSING_SERVICE = "missing service"  # every skip for a service starts so: "missing service SLURM: why"
INSTALL_SERVICES = "sudo .ci/install-services installs it; the packages are in .ci/system-packages"
_SKIPPED = re.compile(rf"{MISSING_SERVICE} (\w+): (.*)")


def missing_services(skip_reasons: list[str]) -> Counter:
    """(service, why) -> how many tests were skipped for it."""
    found = (_SKIPPED.search(reason) for reason in skip_reasons)
    return Counter(match.groups() for match in found if match)


def summary_lines(skip_reasons: list[str]) -> list[str]:
    missing = missing_services(skip_reasons)
    if not missing:
        return []
    lines = [f"{sum(missing.values())} test(s) did not run because a service is missing here:"]
    lines += [f"  {service}: {count} test(s) ({why})" for (service, why), count in sorted(missing.items())]
    lines.append("install them with: sudo .ci/install-services (as root on Debian or Ubuntu), then make test")
    return lines
