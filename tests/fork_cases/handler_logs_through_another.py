"""A fork while another thread is inside a handler whose emit logs through a second handler (two handler locks,
taken in that thread's order): run as `python THIS with` to register coffea-dispatch's at-fork hooks."""

import logging
import os
import sys
import threading
import time

if sys.argv[1:] == ["with"]:
    import coffea_dispatch.executors  # noqa: F401  (registers fork_safety's at-fork hooks, as every run does)

entered = threading.Event()


class Relaying(logging.Handler):
    relay: logging.Logger | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.relay is not None:
            entered.set()
            time.sleep(0.5)  # formatting, a slow stream
            self.relay.warning("relayed: %s", record.getMessage())


first, second = sorted([Relaying(), Relaying()], key=id)  # fork_safety takes handler locks in id order
logging.getLogger("target").addHandler(first)
logging.getLogger("relaying").addHandler(second)
second.relay = logging.getLogger("target")
writer = threading.Thread(target=logging.getLogger("relaying").warning, args=("hello",), daemon=True)
writer.start()
entered.wait()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
writer.join()
print("forked and done")
