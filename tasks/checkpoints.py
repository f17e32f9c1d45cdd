"""Named moments of an index run where a test can stop the process, to kill it exactly there.

With RCI_FREEZE_AT=<name> in its environment, a run that first reaches that moment sends
itself SIGSTOP and waits, frozen, for whatever the test sends next: SIGKILL, to prove that a
run killed there leaves an index the next run repairs, or SIGCONT, to let it go on (it does
not stop there again). Without it, nothing happens.

    embed            a batch's texts are about to go to the model
    write            a batch is in both stores (uncommitted), before the next batch
    commit:tantivy   Tantivy has committed, the vector store is not flushed yet
    commit:vectors   both stores are durable, the manifest and snapshot not written yet
    commit:manifest  the manifest is written, the snapshot not yet
"""

from __future__ import annotations

import os
import signal

ENVIRONMENT = "RCI_FREEZE_AT"


_frozen: set[str] = set()


def reached(name: str) -> None:
    if os.environ.get(ENVIRONMENT) == name and name not in _frozen:
        _frozen.add(name)
        os.kill(os.getpid(), signal.SIGSTOP)
