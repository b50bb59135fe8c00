#!/usr/bin/python3
"""Where a process's memory goes over time: runs a command and samples /proc/PID/status every --every seconds,
splitting the resident set into anonymous memory (heap: weights, activations, optimizer state) and file pages
(mmapped files, e.g. a safetensors checkpoint while it is being read). Prints the peak of each, when it
happened, a coarse timeline, and the kernel's own peak (VmHWM). For bench/TORCH_BASELINE.md's memory notes.

Usage: /usr/bin/python3 bench/rss_timeline.py [--every 0.05] [--lines 20] -- COMMAND [ARGS...]"""
import argparse
import subprocess
import sys
import time


def sample(pid):
    """{'RssAnon': MiB, 'RssFile': MiB, 'VmHWM': MiB, ...} or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            out = {}
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    out[k] = int(v.split()[0]) / 1024.0
            return out
    except (FileNotFoundError, ProcessLookupError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=float, default=0.05)
    ap.add_argument("--lines", type=int, default=20, help="timeline rows to print")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    if not cmd:
        ap.error("give a command after --")
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=sys.stderr)
    rows, hwm = [], 0.0
    while p.poll() is None:
        s = sample(p.pid)
        if s and "VmRSS" in s:
            rows.append((time.perf_counter() - t0, s["VmRSS"], s.get("RssAnon", 0), s.get("RssFile", 0)))
            hwm = max(hwm, s.get("VmHWM", 0))
        time.sleep(a.every)
    if not rows:
        sys.exit("rss_timeline: the process ended before the first sample")
    peak = max(rows, key=lambda r: r[1])
    anon = max(rows, key=lambda r: r[2])
    print(f"rss_timeline: {' '.join(cmd[:3])} ... exit {p.returncode}, {rows[-1][0]:.1f} s, {len(rows)} samples")
    print(f"  peak RSS {peak[1]:,.0f} MiB at {peak[0]:.1f} s (anon {peak[2]:,.0f} + file {peak[3]:,.0f}); "
          f"peak anon {anon[2]:,.0f} MiB at {anon[0]:.1f} s; VmHWM {hwm:,.0f} MiB")
    step = max(1, len(rows) // a.lines)
    print("  time s    RSS MiB   anon MiB   file MiB")
    for r in rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else []):
        print(f"  {r[0]:6.1f} {r[1]:10,.0f} {r[2]:10,.0f} {r[3]:10,.0f}")
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
