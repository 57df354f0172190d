"""The `coffea-dispatch` command: stopping signals are held before anything else is imported.

Importing the command line pulls in rich, then coffea, numba and uproot (about a second). A Ctrl-C in that
second must end the command with one line, like a Ctrl-C later on, so the signals are held first, with the C
`_signal` module (`signal` imports enum: milliseconds), and released once the command is ready. The imports
below the hold come after it on purpose.
"""

import _signal

_received: list[int] = []
_held = {n: _signal.getsignal(n) for n in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)}
_held = {n: handler for n, handler in _held.items() if handler != _signal.SIG_IGN}  # `nohup` keeps ignoring SIGHUP
for _number in _held:
    _signal.signal(_number, lambda signum, frame: _received.append(signum))

from coffea_dispatch.cli import console_main as _console_main  # noqa: E402
from coffea_dispatch.signals import HeldSignals  # noqa: E402

STARTING = HeldSignals(_received, _held)


def console_main() -> None:
    _console_main(STARTING)
