"""Adapter loading: CPU→GPU slot activation and disk→CPU read times per adapter rank, from adapter-loading
runs of one model.

Columns used: ``status``, ``adapter_rank``, ``max_lora_rank``, ``cpu_to_gpu_load_mean_ms``,
``disk_load_median_ms``, ``disk_load_mean_ms``, ``disk_load_max_ms``.
"""

from __future__ import annotations

import numpy as np

from .fitting import Table, group_max, group_mean, select

__all__ = ["fit_loading"]


def fit_loading(loading: Table) -> tuple[dict, dict]:
    """Per adapter rank: mean over max_lora_rank of cpu_to_gpu_load_mean_ms and of disk_load_median_ms.

    Returns the profile's ``loading`` section and the fit report."""
    rows = select(loading, loading["status"] == "ok")
    rank = rows["adapter_rank"]
    cpu_to_gpu = group_mean(rank, rows["cpu_to_gpu_load_mean_ms"])
    disk = group_mean(rank, rows["disk_load_median_ms"])
    ranks = [int(r) for r in cpu_to_gpu]
    table = {"ranks": ranks, "cpu_to_gpu_ms": [float(cpu_to_gpu[r]) for r in ranks],
             "disk_to_cpu_ms": [float(disk[r]) for r in ranks]}
    disk_mean, disk_max = group_mean(rank, rows["disk_load_mean_ms"]), group_max(rank, rows["disk_load_max_ms"])
    order = np.lexsort((rows["max_lora_rank"], rank))
    report = {
        "rows_used": int(len(rank)),
        "cpu_to_gpu_ms_by_max_lora_rank": {
            f"rank {int(rank[i])} / max {int(rows['max_lora_rank'][i])}": float(rows["cpu_to_gpu_load_mean_ms"][i])
            for i in order},
        "disk_mean_ms_by_rank": {str(r): float(disk_mean[r]) for r in ranks},
        "disk_max_ms_by_rank": {str(r): float(disk_max[r]) for r in ranks},
        "notes": [
            "cpu_to_gpu: mean over the max_lora_rank settings of cpu_to_gpu_load_mean_ms",
            "disk: mean over max_lora_rank of disk_load_median_ms; the mean includes a cold-start "
            "outlier (the first load, up to several hundred ms)",
            "activation time depends more on the slot size (max_lora_rank) than on the adapter rank",
        ],
    }
    return table, report
