"""Which CPU kernels torch runs, chosen before the first kernel so a run's bytes do not depend on the vendor.

Same seed, same bytes holds on one CPU; across CPUs the libraries under torch pick kernels by what the
CPU offers: MKL (matrix products) dispatches AVX-512 code on Intel and AVX2 code on AMD, and ATen's
vectorised kernels run the CPU's best of avx512 / avx2 / default. Each rounds in its own way, so the
same run gave other claims on an Intel Xeon than on an AMD EPYC. A pinning fixes both:

- ``compatible`` (the default): MKL_CBWR=COMPATIBLE (MKL's conditional numerical reproducibility, CNR,
  on its SSE2 code without approximate reciprocals) and ATEN_CPU_CAPABILITY=default (ATen's plain
  kernels). COMPATIBLE is the one named MKL branch documented on every vendor, and ATen's plain kernels
  are the same binary code everywhere. Measured: the reference digests of an AMD EPYC's compatible row,
  also with MKL taking this AMD CPU for an Intel one (`tests/test_pinning.py`). About twice as slow as
  ``avx2`` for the paper's d = 32 steps (`benchmarks/bench_train.py --pinnings-only`).
- ``avx2``: MKL_CBWR=AVX2 and ATEN_CPU_CAPABILITY=avx2 (ATen's AVX2 kernels). MKL runs its AVX2 branch on
  Intel CPUs only; on other vendors it offers AUTO and COMPATIBLE alone, and MKL_CBWR=AVX2 runs AUTO (its
  usual dispatch, AVX2 code on an AMD EPYC, with fixed cache sizes and deterministic reductions); the
  branch read back says which. The two round differently: with MKL taking this AMD CPU for an Intel one
  (so running the AVX2 branch), three of the reference's four runs gave other bytes. So ``avx2`` gives
  the same bytes on AMD CPUs with AVX-512 (measured on two EPYC generations) and other bytes on Intel's.
- ``native``: nothing set; each library takes this CPU's best (fastest, not portable).

oneDNN, which torch calls for GELU, is capped under ``compatible`` and ``avx2`` at its AVX-512 core
kernels (ONEDNN_MAX_CPU_ISA=AVX512_CORE): on an AMD EPYC its avx512_core and avx512_core_bf16 kernels gave
the same bytes as each other, and the cap keeps a CPU with newer extensions (AMX on a recent Xeon) on that
same code. Its AVX2 kernel gives other bytes, so a CPU without AVX-512 differs in GELU; capping oneDNN at
AVX2 would make every AVX2 CPU agree, at the price of other bytes than those measured on the reference
machine.

When each library reads its variable, measured on torch 2.13.0+cpu: not when torch is imported, but on
first use, MKL at its first call and ATen at its first dispatched kernel (or `get_cpu_capability`).
So setting them after ``import torch`` works as long as no tensor arithmetic has run yet; `pin`
checks afterwards. ATen's kernel set is read back with `torch.backends.cpu.get_cpu_capability()`.
MKL's branch is read back with MKL's internal `mkl_serv_cbwr_get`, which torch exports; its answers are
mkl_service.h's MKL_CBWR_* values: 1 no branch, 2 AUTO, 3 COMPATIBLE, 10 AVX2. Under MKL_CBWR=AVX2 an Intel
CPU answers 10 and any other 2 (`mkl_branch_expected`).

The shell's variables win: if the user set one of a pinning's variables to another value, none is set
and one line says what runs. An ATEN_CPU_CAPABILITY that torch does not take (it would ignore it) is
replaced, and `asked_capability` still reports it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from circuitpath.errors import ConfigError

#: The environment variable naming the pinning (read when circuitpath is imported).
ENV = "CIRCUITPATH_PINNING"
#: The pinning used when none is named.
DEFAULT = "compatible"
#: run.json key holding the pinning a run was written under (a run without it was written natively).
KEY = "pinning"
#: What each pinning sets; the variables any of them sets are the ones that say which kernels run.
PINNINGS: dict[str, dict[str, str]] = {
    "avx2": {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "native": {},
    "compatible": {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}
VARIABLES = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
#: The CPU flags (/proc/cpuinfo) a pinning needs.
NEEDS = {"avx2": ("avx2", "fma"), "native": (), "compatible": ()}
#: The ATEN_CPU_CAPABILITY values torch takes on x86-64 (others it ignores).
ATEN_VALUES = ("default", "avx2", "avx512")
#: mkl_serv_cbwr_get's answers (MKL_CBWR_* in mkl_service.h).
MKL_BRANCH_OFF, MKL_AUTO, MKL_COMPATIBLE, MKL_AVX2 = 1, 2, 3, 10

_set_by_us: dict[str, str] = {}
_replaced: dict[str, str] = {}
_problem: ConfigError | None = None  # a bad pinning asked for at import, until one is pinned
_pending: list[str] = []  # notes of the pinning made at import, not yet said


def chosen(name: str | None = None) -> str:
    """The pinning asked for: `name`, else $CIRCUITPATH_PINNING, else the default; an unknown one is refused."""
    asked = name or os.environ.get(ENV) or DEFAULT
    if asked not in PINNINGS:
        where = f"{ENV}={asked}" if name is None else f"--pinning {asked}"
        raise ConfigError(f"{where} is not a pinning: choose one of {', '.join(PINNINGS)}")
    return asked


def _cpuinfo(field: str) -> str | None:
    """The first CPU's `field` in /proc/cpuinfo ("" when it has none; None where there is none to read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith(field)), "")
    return line.partition(":")[2].strip()


def cpu_flags() -> set[str] | None:
    """This CPU's flags from /proc/cpuinfo (None where there is none to read)."""
    flags = _cpuinfo("flags")
    return None if flags is None else set(flags.split())


def cpu_vendor() -> str | None:
    """This CPU's vendor_id from /proc/cpuinfo ("GenuineIntel", "AuthenticAMD", ...; None where unreadable)."""
    return _cpuinfo("vendor_id") or None


def mkl_branch_expected(cbwr: str | None, vendor: str | None) -> int:
    """The branch MKL runs under MKL_CBWR=`cbwr` on a CPU of `vendor`: a named ISA branch on Intel CPUs
    only; elsewhere MKL supports AUTO and COMPATIBLE alone and runs AUTO for any other name."""
    if cbwr is None:
        return MKL_BRANCH_OFF
    if cbwr == "COMPATIBLE":
        return MKL_COMPATIBLE
    return MKL_AVX2 if vendor == "GenuineIntel" else MKL_AUTO


def check_cpu(name: str, flags: set[str] | None) -> None:
    """Refuse a pinning whose kernels this CPU (its `flags`) cannot run, naming both."""
    missing = [flag for flag in NEEDS[name] if flags is None or flag not in flags]
    if missing:
        has = "flags that could not be read" if flags is None else f"no {' or '.join(f.upper() for f in missing)}"
        raise ConfigError(f"pinning {name} needs a CPU with {' and '.join(f.upper() for f in NEEDS[name])}; "
                          f"this CPU has {has}: choose --pinning native or compatible")


def resolve(name: str | None, flags: set[str] | None) -> str:
    """The pinning to run on a CPU with `flags`: the one asked for (see `chosen`), refused when the CPU
    cannot run it; the default, not asked for, falls back to native on such a CPU."""
    explicit = name is not None or ENV in os.environ
    asked = chosen(name)
    try:
        check_cpu(asked, flags)
    except ConfigError:
        if explicit:
            raise
        return "native"
    return asked


def pin(name: str | None = None) -> list[str]:
    """Set the variables of pinning `name` (see `chosen`) in this process, before torch's first kernel.

    Returns the lines to tell the user (the shell's variables won, or torch had run kernels already
    and the pinning could not take effect). A pinning asked for explicitly (an argument or
    $CIRCUITPATH_PINNING) that this CPU cannot run is refused; the default falls back to native there.
    Called again (the CLI's --pinning), it first takes back what it set before.
    """
    global _problem
    name = resolve(name, cpu_flags())
    _unpin()
    _problem = None
    _pending.clear()
    wanted = PINNINGS[name]
    _replace_ignored_capability(wanted)
    conflicts = {k: os.environ[k] for k in wanted if os.environ.get(k, wanted[k]) != wanted[k]}
    if conflicts:
        shell = " ".join(f"{k}={v}" for k, v in conflicts.items())
        os.environ[ENV] = "native"  # worker processes inherit the shell's variables and say nothing more
        return [f"{shell} set in the environment overrides pinning {name}: it runs {running()}"]
    for key, value in wanted.items():
        if key not in os.environ:
            os.environ[key] = _set_by_us[key] = value
    if "torch" in sys.modules and not _took_effect(wanted):
        _unpin()
        os.environ[ENV] = "native"  # worker processes run what this one runs
        return [f"torch ran kernels before circuitpath could pin them, so pinning {name} could not take effect: this "
                f"process runs {running()}; import circuitpath before torch, or set "
                f"{' '.join(f'{k}={v}' for k, v in wanted.items())} in the shell"]
    os.environ[ENV] = name  # worker processes pin the same
    return []


def pin_at_import() -> None:
    """`import circuitpath`: pin as asked. That torch ran first is said at once; the rest (the shell's
    variables won, a bad ask) waits for `announce`, so that the CLI's --pinning can ask again first."""
    global _problem
    try:
        notes = pin()
    except ConfigError as error:
        _problem = error
        return
    if "torch" in sys.modules:
        _say(notes)
    else:
        _pending.extend(notes)


def announce() -> None:
    """Refuse a bad pinning asked for at import, and say once what `pin_at_import` left to say."""
    if _problem is not None:
        raise _problem
    _say(_pending)
    _pending.clear()


def record() -> str:
    """What run.json records: the pinning this process runs (after `announce`)."""
    announce()
    return running()


def _say(notes: list[str]) -> None:
    for line in notes:
        print(f"circuitpath: {line}", file=sys.stderr)


def running() -> str:
    """The pinning whose variables are those this process runs under, or 'custom: VAR=value ...'."""
    values = {k: os.environ.get(k) for k in VARIABLES}
    for name, wanted in PINNINGS.items():
        if all(values[k] == wanted.get(k) for k in VARIABLES):
            return name
    return "custom: " + " ".join(f"{k}={v}" for k, v in values.items() if v is not None)


def environment() -> dict[str, str]:
    """The variables that make another process (a Ray worker) run the kernels this one runs."""
    return {k: os.environ[k] for k in (ENV, *VARIABLES) if k in os.environ}


def asked_capability() -> str | None:
    """The ATEN_CPU_CAPABILITY the user asked for (also one replaced because torch would ignore it)."""
    return _replaced.get("ATEN_CPU_CAPABILITY", os.environ.get("ATEN_CPU_CAPABILITY"))


def mkl_branch() -> int | None:
    """MKL's conditional-reproducibility branch (1 none, 2 AUTO, 3 COMPATIBLE, 10 AVX2); None if unreadable."""
    import ctypes

    import torch

    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    return get(1)


def _took_effect(wanted: dict[str, str]) -> bool:
    """With torch loaded: whether ATen and MKL run what the environment now asks (their first use fixes it)."""
    import torch

    aten = os.environ.get("ATEN_CPU_CAPABILITY")
    if aten is not None and torch.backends.cpu.get_cpu_capability().lower() != aten:
        return False
    branch = mkl_branch()
    return branch is None or branch == mkl_branch_expected(os.environ.get("MKL_CBWR"), cpu_vendor())


def _replace_ignored_capability(wanted: dict[str, str]) -> None:
    asked = os.environ.get("ATEN_CPU_CAPABILITY")
    if asked is not None and asked not in ATEN_VALUES and "ATEN_CPU_CAPABILITY" in wanted:
        _replaced["ATEN_CPU_CAPABILITY"] = asked
        del os.environ["ATEN_CPU_CAPABILITY"]


def _unpin() -> None:
    """Take back the variables a previous `pin` set (and restore one it replaced)."""
    for key, value in list(_set_by_us.items()):
        if os.environ.get(key) == value:
            del os.environ[key]
        del _set_by_us[key]
    for key, value in list(_replaced.items()):
        os.environ.setdefault(key, value)
        del _replaced[key]
