"""In-process Rego evaluation with regorus, loading the same `.rego` files an OPA server does.

Regorus implements no network-reaching builtins (no `http.send`, no `net.*` lookups), so a
policy evaluated here can never make a request, whatever it contains.
"""

from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path
from typing import Any

import hobofan_regorus  # type: ignore[import-untyped]
import orjson

from soma.policy.port import Decision, PolicyError, PolicyInput, Subject, decision_from_result

QUERY = "data.soma.policy.decision"
_PACKAGE = "data.soma.policy"
_REGO_V1 = re.compile(r"^\s*import\s+rego\.v1\s*$", re.MULTILINE)
_ENGINES_PER_THREAD = 4

Sources = tuple[tuple[str, str], ...]
"""(file name, policy text) pairs, in load order."""


class Policies:
    """One loaded set of sources; compared by identity, so each load gets fresh engines."""

    __slots__ = ("sources",)

    def __init__(self, sources: Sources) -> None:
        self.sources = sources


# Regorus engines must be created, used AND freed on one thread. A `threading.local` frees a
# thread's values on that thread when it exits, but frees all of them on whatever thread drops
# the local object itself; so this cache lives as long as the module, never with an instance.
_thread_engines = threading.local()


def _clean(exc: BaseException) -> str:
    """One line from a regorus error: its location and message, without the Rust backtrace."""
    text = str(exc).split("Stack backtrace:", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    where = next((line[3:].strip() for line in lines if line.startswith("-->")), None)
    what = next((line[6:].strip() for line in reversed(lines) if line.startswith("error:")), None)
    if where and what:
        return f"{where}: {what}"
    return " ".join(lines)[:500] or type(exc).__name__


def _is_engine_failure(exc: BaseException) -> bool:
    # A Rust panic surfaces as pyo3's PanicException, a BaseException: it must deny, not escape.
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def read_sources(rego_dir: Path | None) -> Sources:
    """Every `.rego` file of `rego_dir` (recursively), or the policies packaged with soma."""
    where = "the packaged soma/policy/rego" if rego_dir is None else str(rego_dir)
    try:
        found = _read(rego_dir)
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read policies in {where}: {exc}") from None
    if not found:
        raise PolicyError(f"no .rego files in {where}")
    for name, text in found:
        if not _REGO_V1.search(text):
            raise PolicyError(f"{name}: missing `import rego.v1` (policies are Rego v1)")
    return tuple(sorted(found))


def _read(rego_dir: Path | None) -> list[tuple[str, str]]:
    if rego_dir is None:
        packaged = resources.files("soma.policy").joinpath("rego")
        return [
            (item.name, item.read_text("utf-8"))
            for item in packaged.iterdir()
            if item.name.endswith(".rego")
        ]
    if not rego_dir.is_dir():
        raise PolicyError(f"policy.rego_dir {rego_dir} is not a directory")
    return [
        (str(path.relative_to(rego_dir)), path.read_text("utf-8"))
        for path in rego_dir.rglob("*.rego")
    ]


def compile_engine(sources: Sources) -> Any:
    """A new regorus engine holding `sources`; use it only on the calling thread."""
    engine = hobofan_regorus.Engine()
    try:
        for name, text in sources:
            engine.add_policy(name, text)
        packages = engine.get_packages()
    except BaseException as exc:
        if not _is_engine_failure(exc):
            raise
        raise PolicyError(f"cannot compile policies: {_clean(exc)}") from None
    if _PACKAGE not in packages:
        raise PolicyError("no policy file declares `package soma.policy`")
    return engine


def thread_engine(policies: Policies) -> Any:
    """The calling thread's engine for `policies`, compiled on first use by this thread."""
    engines: dict[Policies, Any] | None = getattr(_thread_engines, "engines", None)
    if engines is None:
        engines = _thread_engines.engines = {}
    engine = engines.get(policies)
    if engine is None:
        engine = compile_engine(policies.sources)
        while len(engines) >= _ENGINES_PER_THREAD:
            del engines[next(iter(engines))]
        engines[policies] = engine
    return engine


def evaluate(engine: Any, input: PolicyInput) -> Decision:
    """Evaluate the decision with `engine`, which must belong to the calling thread."""
    try:
        # JSON, not set_input(dict): the binding turns Python booleans into numbers.
        engine.set_input_json(orjson.dumps(input.to_json()).decode())
        value = engine.eval_rule(QUERY)
    except BaseException as exc:
        if not _is_engine_failure(exc):
            raise
        raise PolicyError(f"evaluation failed: {_clean(exc)}") from None
    return decision_from_result(value)


class EmbeddedPolicy:
    """Evaluates on the calling thread with that thread's own engine, so callers on any
    thread or task never share one (regorus engines are bound to their creating thread)."""

    def __init__(self, rego_dir: Path | None = None) -> None:
        self._rego_dir = rego_dir
        self._policies: Policies | None = None

    @property
    def description(self) -> str:
        where = "packaged policies" if self._rego_dir is None else str(self._rego_dir)
        return f"embedded regorus ({where})"

    def load(self) -> int:
        """Read, compile and probe the policies; return how many files were loaded."""
        policies = Policies(read_sources(self._rego_dir))
        probe = PolicyInput(action="policy.probe", tenant="probe", subject=Subject("probe"))
        evaluate(thread_engine(policies), probe)
        self._policies = policies
        return len(policies.sources)

    async def start(self) -> None:
        self.load()

    async def stop(self) -> None:
        self._policies = None

    async def check(self) -> str:
        policies = self._policies
        if policies is None:
            raise PolicyError("policies are not loaded")
        return f"embedded regorus, {len(policies.sources)} policy file(s)"

    async def evaluate(self, input: PolicyInput) -> Decision:
        # Inline on the event loop: one evaluation costs tens of microseconds, less than the
        # hop to a worker thread (see bench/bench_policy.py).
        return self.evaluate_sync(input)

    def evaluate_sync(self, input: PolicyInput) -> Decision:
        """Decide on the current thread; safe to call from any thread."""
        policies = self._policies
        if policies is None:
            raise PolicyError("policies are not loaded")
        return evaluate(thread_engine(policies), input)
