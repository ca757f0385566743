"""`python -m camfleet_hub ingest ...` that dies right after the first object write of a batch (before the commit
and the acknowledgement): the crash test's fault, injected here rather than in production ingest code.

Run as `python tests/support/crash_ingest.py ingest --config FILE`; exits with EXIT_CODE at the fault.
"""

from __future__ import annotations

import logging
import os
import sys
from concurrent.futures import Future

from camfleet_hub.__main__ import main
from camfleet_hub.ingest.validate import ValidFrame
from camfleet_hub.ingest.worker import IngestWorker

EXIT_CODE = 17
_store_objects = IngestWorker._store_objects


def _crash_after_first_store(self: IngestWorker, frames: list[ValidFrame]) -> list[Future[str]]:
    for stored in _store_objects(self, frames[:1]):  # the write is started on the store pool: wait until it is done
        stored.result()
    if frames:
        logging.getLogger("crash_ingest").error("fault injection: exiting after the first object write of a batch")
        logging.shutdown()
        os._exit(EXIT_CODE)
    return []


if __name__ == "__main__":
    IngestWorker._store_objects = _crash_after_first_store  # type: ignore[method-assign]
    sys.exit(main(sys.argv[1:]))
