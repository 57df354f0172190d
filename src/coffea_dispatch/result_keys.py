"""What an executor's result may carry beside the accumulator, under keys of its own: the protocol between the
chunk function (chunk.py), the executors that run it and the run that reads their results (a leaf: all three
import it, it imports nothing).

A chunk function's result may name more items to run (FOLLOW_UP_KEY: the chunks a FileTask leaves to the other
workers); an executor that can submit work while it runs (our futures pool) runs them in the same call, coffea's
return them in the accumulator and the run starts them in a next call. Our futures pool adds the items whose
worker died while running them (KILLED_KEY: `local.KilledChunk`); the Dask executor the chunks that killed its
workers (KILLED_WORKERS_KEY: `errors.KilledWorkerError`). Each chunk's stats keep what it read of its file
(READ_KEY: file -> "start-stop" -> `weights.ChunkCount`), for the run's completeness.
"""

FOLLOW_UP_KEY = "follow_up"
KILLED_KEY = "killed"
KILLED_WORKERS_KEY = "killed_workers"
READ_KEY = "read"
