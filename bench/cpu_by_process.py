"""Where a command's CPU goes: every process's CPU seconds (user + system, from /proc) while the command runs, summed
by process title (Ray names its workers ray::<class>), with the command's wall time. Linux only.

    .venv/bin/python bench/cpu_by_process.py -- .venv/bin/python jobs/cv.py --config configs/quick-cpu.yaml --quiet

On a machine with few cores the wall of a run whose processes keep every core busy is about their CPU seconds over
the cores: this says which processes to make cheaper (docs/results.md, issue 45). Processes are sampled every
--every seconds, so ones that live shorter than that are missed; every process on the machine is counted, so run it
on a quiet machine. Timings are this machine's; docs/results.md keeps them with the command.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--every", type=float, default=0.5, help="seconds between samples (default: 0.5)")
    p.add_argument("--top", type=int, default=20, help="titles printed, most CPU first (default: 20)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = p.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not args.command:
        p.error("name the command after --")
    if args.every <= 0 or args.top < 1:
        p.error("--every must be > 0 and --top >= 1")
    return args


def sample() -> dict[int, tuple[str, float]]:
    """{pid: (title, CPU seconds so far)} of every process readable now."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:70]
        except OSError:
            continue  # ended between the listing and the read
        out[int(pid)] = (title or "(kernel or unnamed)", (int(fields[11]) + int(fields[12])) / HZ)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    before = {pid: cpu for pid, (_, cpu) in sample().items()}
    started = time.perf_counter()
    proc = subprocess.Popen(args.command)
    last: dict[int, tuple[str, float]] = {}
    while proc.poll() is None:
        last.update(sample())
        time.sleep(args.every)
    wall = time.perf_counter() - started
    by_title: collections.Counter = collections.Counter()
    for pid, (title, cpu) in last.items():
        by_title[title] += cpu - before.get(pid, 0.0)
    total = sum(v for v in by_title.values() if v > 0)
    print(f"wall {wall:.1f} s, CPU {total:.1f} s ({total / wall:.2f} cores on average; exit status {proc.returncode})")
    for title, cpu in by_title.most_common(args.top):
        print(f"{cpu:8.1f} s  {title}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
