"""Shared helpers for benchmark scripts: machine description, peak RSS, table output.

Every benchmark prints a Markdown table and appends it, with the machine's description and
the date, to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_DOC = ROOT / "docs" / "benchmarks.md"


def machine_description() -> str:
    """CPU model, core count, memory, GPU (if any), Python and torch versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    parts = [f"{cpu}", f"{os.cpu_count()} cores", f"{mem_gib:.0f} GiB RAM"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name(0)}")
        else:
            parts.append("no GPU")
    except ImportError:
        pass
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


def peak_rss_gib(include_children: bool = False) -> float:
    """Peak resident set size of this process (and optionally its waited-for children)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if include_children:
        kib = max(kib, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return kib / 2**20


PERF_TAGS = ("perf/steps_per_s", "perf/examples_per_s")


def train_perf(output_dir) -> dict[str, list[float]]:
    """``train.py``'s throughput from its TensorBoard logs under ``output_dir/logs``: one value
    per logging interval for each of :data:`PERF_TAGS` that was logged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, list[float]] = {}
    for ev in sorted(Path(output_dir).glob("logs/**/events.out.tfevents.*")):
        acc = EventAccumulator(str(ev), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in PERF_TAGS:
            if tag in acc.Tags()["scalars"]:
                values.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return values


def steady(values: list[float]) -> list[float]:
    """The logging intervals after the first (warm-up, loader start), or the only one."""
    return values[1:] or values


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    columns = columns or list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def report(title: str, rows: list[dict], *, notes: str = "", columns: list[str] | None = None,
           append: bool = True) -> str:
    """Print the table and append it to docs/benchmarks.md under a dated heading."""
    table = markdown_table(rows, columns)
    commit = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        pass
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (f"\n## {title}\n\n{stamp}, commit {commit or 'uncommitted'}; "
               f"machine: {machine_description()}\n\n"
               f"Command: `{' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`\n\n"
               f"{table}\n")
    if notes:
        section += f"\n{notes}\n"
    print(section)
    if append:
        BENCH_DOC.parent.mkdir(parents=True, exist_ok=True)
        if not BENCH_DOC.exists():
            BENCH_DOC.write_text("# Benchmarks\n\nFigures appended by the scripts in "
                                 "`benchmarks/`, newest last.\n")
        with BENCH_DOC.open("a") as fh:
            fh.write(section)
    return section
