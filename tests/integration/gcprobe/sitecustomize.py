"""Put on a test agent's PYTHONPATH with ``VAS_TEST_GC_PROBE=<dir>``: when ``<dir>/ask`` appears,
the agent writes ``<dir>/answer`` (JSON) saying what its cyclic garbage collector can never free.

First a normal full collection frees every unreachable cycle the collector can see.  What is
left unreachable is inside the set ``gc.freeze()`` hid from it: unfrozen, collected again (kept
in ``gc.garbage`` to be counted by type), it is memory the agent had lost for good."""
import os
import threading
import time


def _probe(where: str) -> None:
    import collections
    import gc
    import json
    ask = os.path.join(where, "ask")
    while not os.path.exists(ask):
        time.sleep(0.05)
    frozen = gc.get_freeze_count()
    normal = gc.collect()
    gc.unfreeze()
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    kinds = collections.Counter(type(o).__qualname__ for o in gc.garbage)
    answer = {"frozen": frozen, "collected": normal, "lost": len(gc.garbage), "kinds": dict(kinds.most_common(8))}
    gc.garbage.clear()
    gc.set_debug(0)
    with open(os.path.join(where, "answer.tmp"), "w") as out:
        json.dump(answer, out)
    os.rename(os.path.join(where, "answer.tmp"), os.path.join(where, "answer"))


def _is_agent() -> bool:
    with open("/proc/self/cmdline", "rb") as cmdline:
        return any(arg.endswith(b"vas-agent") for arg in cmdline.read().split(b"\0"))


if os.environ.get("VAS_TEST_GC_PROBE") and _is_agent():
    threading.Thread(target=_probe, args=(os.environ["VAS_TEST_GC_PROBE"],), name="gc-probe", daemon=True).start()
