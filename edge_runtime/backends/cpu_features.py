"""Whether this CPU runs ONNX Runtime's INT8 kernels without saturating.

On x86, ONNX Runtime runs every INT8 Conv / MatMul as uint8 activations x int8 weights (U8S8):
a graph with int8 activations (S8S8, the symmetric Q/DQ form TensorRT needs) has them shifted to
uint8 when the session loads. Without VNNI those kernels multiply with VPMADDUBSW, which adds each
pair of neighbouring products in 16 bits and clamps (255 x 127 x 2 = 64770 > 32767): outputs can
be far off. VNNI (AVX-512 VNNI, AVX-VNNI) and AMX add the products in 32 bits; ONNX Runtime's
quantization guide says the issue does not exist on x64 with VNNI nor on ARM, and its x86-only
fix, the session entry below, is compiled out on other architectures. With that entry ONNX Runtime
converts the int8 weights to uint8 and runs its U8U8 kernels, which do not saturate (slower).

The functions take the cpuinfo text and machine name so that tests can feed any CPU; by default
they read this host's /proc/cpuinfo and ``platform.machine()``.
"""
from __future__ import annotations

import platform
from pathlib import Path

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# ONNX Runtime session config entry: INT8 matrix products in U8U8 (exact) on x86 without VNNI
EXACT_INT8_ENTRY = "session.x64quantprecision"
_X86 = frozenset({"x86_64", "amd64", "x64", "i386", "i486", "i586", "i686", "x86"})
_CPUINFO = Path("/proc/cpuinfo")


def read_cpuinfo() -> str | None:
    """This host's /proc/cpuinfo, or None where there is none (not Linux) or it cannot be read."""
    try:
        return _CPUINFO.read_text(errors="replace")
    except OSError:
        return None


def is_x86(machine: str | None = None) -> bool:
    return (machine if machine is not None else platform.machine()).strip().lower() in _X86


def vnni_flags(cpuinfo: str | None = None) -> set[str]:
    """The VNNI / AMX-INT8 flags every listed core has (empty where none, or no flags are readable)."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    per_core = _flag_sets(text or "")
    if not per_core:
        return set()
    # a feature only when every core has it: a thread may be scheduled on any of them
    return set.intersection(*per_core) & VNNI_FLAGS


def has_vnni(cpuinfo: str | None = None, machine: str | None = None) -> bool | None:
    """True / False on an x86 CPU whose flags are readable; None where it is not known: no
    cpuinfo (not Linux), no flags line in it, or not x86 (VNNI is an x86 extension)."""
    if not is_x86(machine):
        return None
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    if not text or not _flag_sets(text):
        return None
    return bool(vnni_flags(text))


def s8s8_safe(cpuinfo: str | None = None, machine: str | None = None) -> tuple[bool, str]:
    """-> (whether ONNX Runtime's CPU INT8 kernels are exact here, a one-line reason).

    An x86 CPU whose VNNI support cannot be read counts as unsafe: the exact kernels cost speed,
    the saturating ones cost wrong answers."""
    arch = machine if machine is not None else platform.machine()
    if not is_x86(arch):
        return True, f"{arch or 'unknown machine'} is not x86: ONNX Runtime's INT8 CPU kernels do not saturate"
    text = (read_cpuinfo() if cpuinfo is None else cpuinfo) or ""  # read once
    vnni = has_vnni(text, arch)
    if vnni:
        flags = ", ".join(sorted(vnni_flags(text)))
        return True, f"x86 with VNNI ({flags}): INT8 products add in 32 bits, no saturation"
    if vnni is None:
        return False, "x86, VNNI unknown (no CPU flags readable): INT8 treated as saturating on ONNX Runtime CPU"
    return False, "x86 without VNNI: S8S8 INT8 saturates on ONNX Runtime CPU"


def _flag_sets(text: str) -> list[set[str]]:
    sets = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            sets.append(set(value.split()))
    return sets
