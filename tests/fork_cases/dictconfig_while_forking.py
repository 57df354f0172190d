"""A fork while another thread runs logging.config.dictConfig (it holds logging's module lock, then flushes each
handler under that handler's lock): run as `python THIS with` to register coffea-dispatch's at-fork hooks."""

import logging
import logging.config
import os
import sys
import threading
import time
import weakref

if sys.argv[1:] == ["with"]:
    import coffea_dispatch.executors  # noqa: F401  (registers fork_safety's at-fork hooks, as every run does)

flushing = threading.Event()


class SlowFlush(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        pass

    def flush(self) -> None:
        flushing.set()
        time.sleep(0.5)  # a network stream, a full pipe


first, second = sorted([SlowFlush(), SlowFlush()], key=id)
logging.getLogger("x").addHandler(first)
logging.getLogger("y").addHandler(second)
# dictConfig's shutdown of the old handlers flushes the newest first: the slow one is flushed while `first` waits
others = [ref for ref in logging._handlerList if ref() not in (first, second)]
logging._handlerList[:] = [*others, weakref.ref(first), weakref.ref(second)]
first.flush = lambda: None
configuring = threading.Thread(target=logging.config.dictConfig, args=({"version": 1},), daemon=True)
configuring.start()
flushing.wait()
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
configuring.join()
print("forked and done")
