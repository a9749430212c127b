"""What CPU this is, for speed reports and per-machine choices: model name, widest vector instruction set,
and the caps set through the environment (PyTorch's ``ATEN_CPU_CAPABILITY``, oneDNN's ``ONEDNN_MAX_CPU_ISA``).

The instruction set is read from NumPy's CPU dispatch table, which asks the processor (CPUID) and the operating
system (XGETBV: whether it saves the wide registers), as onnxruntime's MLAS does when it picks its kernels.
MLAS has no cap of its own: no environment variable or session option makes it use narrower kernels than the
processor offers, so onnxruntime always runs the machine's real instruction set.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

CAP_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _features() -> dict[str, bool]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1
        from numpy.core._multiarray_umath import __cpu_features__  # type: ignore[no-redef]
    return dict(__cpu_features__)


def instruction_set() -> str:
    """``"AVX-512"`` (AVX512F usable), ``"AVX2"``, ``"AVX"``, or the machine's architecture for other CPUs."""
    features = _features()
    for name, label in (("AVX512F", "AVX-512"), ("AVX2", "AVX2"), ("AVX", "AVX")):
        if features.get(name):
            return label
    return platform.machine() or "other"


def onnxruntime_channel_block() -> int:
    """Channels per block of onnxruntime's NCHWc convolutions on this CPU: 16 with AVX-512F, 8 otherwise
    (MLAS's ``NchwcBlockSize``; 8 is also right where NCHWc is not used, as padding to it costs nothing there
    for channel counts that are multiples of 8)."""
    return 16 if _features().get("AVX512F") else 8


def isa_caps() -> dict[str, str]:
    """The instruction-set caps set in the environment (name -> value), e.g. ``{"ATEN_CPU_CAPABILITY": "avx2"}``."""
    return {name: os.environ[name] for name in CAP_VARIABLES if os.environ.get(name)}


def describe() -> dict[str, object]:
    """The CPU as speed reports state it: model, instruction set, cores, the caps in the environment, and the
    vector width PyTorch's kernels use (after any cap)."""
    info: dict[str, object] = {"cpu": cpu_model(), "instruction_set": instruction_set(), "cores": os.cpu_count(), "caps": isa_caps()}
    try:
        import torch

        info["torch_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - torch missing or too old
        pass
    return info


def summary_line() -> str:
    """One line: ``CPU: AMD EPYC, AVX-512 (2 cores); PyTorch kernels AVX2 (capped: ATEN_CPU_CAPABILITY=avx2)``."""
    info = describe()
    line = f"CPU: {info['cpu']}, {info['instruction_set']} ({info['cores']} cores)"
    if "torch_capability" in info:
        line += f"; PyTorch kernels {info['torch_capability']}"
    caps = info["caps"]
    if caps:
        line += " (capped: " + ", ".join(f"{k}={v}" for k, v in caps.items()) + "; onnxruntime cannot be capped)"
    return line
