"""The program `start()` runs inside the sandbox to prove the isolation holds on this machine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soma.tools.sandbox.limits import Limits

_CODE = """
import json, os, resource, socket
facts = {"uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups()}
facts["nproc"] = resource.getrlimit(resource.RLIMIT_NPROC)[0]
facts["as"] = resource.getrlimit(resource.RLIMIT_AS)[0]
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
facts["no_new_privs"] = status.get("NoNewPrivs", "").strip()
facts["cap_eff"] = int(status.get("CapEff", "0").strip(), 16)
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=2).close()
    facts["loopback"] = "connected"
except OSError as exc:
    facts["loopback"] = type(exc).__name__
facts["seen"] = [p for p in PROTECTED if os.path.exists(p)]
try:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    # CLONE_NEWUSER: a user namespace of its own would give the program capabilities in it.
    facts["userns"] = "created" if libc.unshare(0x10000000) == 0 else ctypes.get_errno()
except ImportError:
    facts["userns"] = "unknown"
print("SOMA-PROBE " + json.dumps(facts))
"""


@dataclass(frozen=True, slots=True)
class ProbeExpectations:
    limits: Limits
    uids: range | None
    """The uids calls must run as (root platforms); None: any but root."""
    isolated: bool
    """Namespaces promised: no loopback, protected paths unseen."""


def probe_code(port: int, protected: Sequence[Path]) -> str:
    return _CODE.replace("PORT", str(port)).replace(
        "PROTECTED", json.dumps([str(p) for p in protected])
    )


def verdict(stdout: str, expect: ProbeExpectations) -> str | None:
    """None if the probe's report shows the promised isolation; else the one-line reason."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith("SOMA-PROBE ")), None)
    if line is None:
        return "the probe printed no report"
    facts: dict[str, Any] = json.loads(line.removeprefix("SOMA-PROBE "))
    if facts["uid"] == 0 or facts["euid"] == 0:
        return "the probe ran as root"
    if expect.uids is not None and facts["uid"] not in expect.uids:
        return f"the probe ran as uid {facts['uid']}, not one of the sandbox's"
    if facts["cap_eff"] != 0:
        return "the probe kept capabilities"
    if facts["no_new_privs"] != "1":
        return "no_new_privs is not set"
    if facts["nproc"] != expect.limits.processes or facts["as"] != expect.limits.memory_bytes:
        return "the rlimits were not applied"
    if expect.isolated:
        if facts["loopback"] == "connected":
            return "the probe reached the platform's loopback port (no network namespace)"
        if facts["seen"]:
            return f"the probe could see {facts['seen'][0]}"
        if not isinstance(facts["userns"], int):
            return f"the probe's user namespace attempt: {facts['userns']}"
    return None
