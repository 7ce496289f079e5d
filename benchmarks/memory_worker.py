"""CPU peak-memory worker: one JSON Case per stdin line in, one JSON reply per line out.

Started by ``harness.CpuPeakMemory``, which explains the method. Reads the kernel's own
accounting from /proc/self/status; Linux only.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys

from benchmarks.cases import Case, Unavailable, build

METHOD = (
    "process RSS high-water above steady state (VmHWM reset through /proc/self/clear_refs), "
    "worker process"
)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        return int(re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE).group(1)) << 10


def peak_bytes(case: Case) -> int:
    workload = build(case)
    workload.run()  # the first call pays for lazy initialisation and compilation
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current VmRSS
    before = _status_bytes("VmRSS")
    workload.run()
    return _status_bytes("VmHWM") - before


def main() -> None:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    # Whatever the libraries print (inductor, warnings) goes to stderr, never into a reply.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in sys.stdin:
        case = Case(**json.loads(line))
        try:
            reply = {"peak_memory_bytes": peak_bytes(case), "peak_memory_method": METHOD}
        except Unavailable as reason:
            reply = {"peak_memory_error": str(reason)}
        except Exception as error:  # reported next to the timing, never fatal
            reply = {"peak_memory_error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        gc.collect()


if __name__ == "__main__":
    main()
