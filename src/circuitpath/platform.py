"""What a run's bytes depend on besides its config: the torch version, the device and the CPU's kernel set.

Training is arranged so that a run's arithmetic is a function of its config alone on one platform
(see `engine.Executor`): not of threads, load, batch-mates or backend. Across platforms it is not:
another torch version or another set of CPU kernels (`ATEN_CPU_CAPABILITY`, AVX512 / AVX2 / DEFAULT)
may round differently. run.json records the platform a run was written on and, beside it, the
kernel pinning it ran under (`pinning`; a run without one ran natively); continuing a run (resume,
branch, switch) on another platform or pinning is refused unless the user accepts it.
"""

from __future__ import annotations

from typing import Any

from circuitpath import pinning
from circuitpath.errors import ConfigError

#: run.json key holding the platform record.
KEY = "platform"
#: The flag that accepts continuing a run on another platform.
FLAG = "--allow-other-platform"


def current(device: str = "cpu") -> dict[str, str]:
    """This process's platform: torch version, device type and, on the CPU, ATen's kernel set."""
    import torch

    record = {"torch": torch.__version__, "device": str(device).split(":")[0]}
    if record["device"] == "cpu":
        record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return record


def describe(record: dict[str, Any] | None) -> str:
    """One phrase: 'torch 2.13.0+cpu, cpu AVX512', or what a run without a record says."""
    if not record:
        return "an unrecorded platform (written before circuitpath recorded it)"
    device = record.get("device", "?")
    capability = f" {record['cpu_capability']}" if record.get("cpu_capability") else ""
    return f"torch {record.get('torch', '?')}, {device}{capability}"


def check(recorded: dict[str, Any] | None, what: str, *, allow: bool, device: str = "cpu",
          pinned: str | None = None) -> None:
    """Refuse to continue `what` (a run written on `recorded`, under pinning `pinned`) here when they differ.

    One line naming both platforms and pinnings; `allow` (the user's `--allow-other-platform`) lets
    it go on. A run that recorded no pinning ran natively.
    """
    here = current(device)
    pinned, running = pinned or "native", pinning.record()
    same_pinning = pinned == running or here["device"] != "cpu"
    if allow or (recorded is not None and _same(recorded, here) and same_pinning):
        return
    hint = f"continue it with --pinning {pinned}, or " if pinned in pinning.PINNINGS and not same_pinning else ""
    raise ConfigError(f"{what} was written on {describe(recorded)} under pinning {pinned}, this process runs "
                      f"{describe(here)} under pinning {running}: its bytes would differ from an uninterrupted "
                      f"run's; {hint}pass {FLAG} to continue anyway")


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("torch", "device", "cpu_capability")
    return all(a.get(k) == b.get(k) for k in keys)


def capability_request() -> str | None:
    """A line saying so when ATEN_CPU_CAPABILITY asks for a kernel set torch is not running (None otherwise)."""
    asked = pinning.asked_capability()
    if not asked:
        return None
    import torch

    running = torch.backends.cpu.get_cpu_capability()
    if asked == running.lower():
        return None
    return (f"ATEN_CPU_CAPABILITY={asked} is not a kernel set torch runs here (it takes default, avx2 or avx512, "
            f"in lower case, and only what the CPU has); it runs {running}")
