"""System metrics of a running run: CPU %, memory (RSS) and, where nvidia-smi exists, GPU use.

The runner samples the script's whole process tree every few seconds and logs `sys/...` series like any metric.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import psutil

from runs import metrics


class ProcessTreeSampler:
    def __init__(self, pid: int):
        self.root_pid = pid
        self._known: dict[int, psutil.Process] = {}
        self._nvidia_smi = shutil.which("nvidia-smi")

    def _tree(self) -> list[psutil.Process]:
        try:
            root = self._known.get(self.root_pid) or psutil.Process(self.root_pid)
            current = [root, *root.children(recursive=True)]
        except psutil.Error:
            return []
        # Keep the same Process objects between samples: cpu_percent measures since the previous call.
        self._known = {p.pid: self._known.get(p.pid, p) for p in current}
        return list(self._known.values())

    def sample(self) -> dict[str, float]:
        cpu, rss = 0.0, 0
        for process in self._tree():
            try:
                cpu += process.cpu_percent(interval=None)
                rss += process.memory_info().rss
            except psutil.Error:
                continue
        values = {"sys/cpu_percent": cpu, "sys/memory_rss_mb": rss / (1024 * 1024)}
        values.update(self._gpu())
        return values

    def _gpu(self) -> dict[str, float]:
        if not self._nvidia_smi:
            return {}
        try:
            out = subprocess.run(
                [self._nvidia_smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=3, check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return {}
        values = {}
        for index, line in enumerate(out.strip().splitlines()):
            try:
                util, memory = (float(part) for part in line.split(","))
            except ValueError:
                continue
            values[f"sys/gpu{index}_utilization_percent"] = util
            values[f"sys/gpu{index}_memory_used_mb"] = memory
        return values


def record(run, values: dict[str, float]) -> None:
    """Append one sample (`sys/...` name -> value) to the run's system series."""
    now = time.time()
    for name, value in values.items():
        metrics.append_points(run, name, [(None, value, now)])
