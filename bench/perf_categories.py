#!/usr/bin/python3
"""Sums a `perf record` profile's self time into coarse categories: GEMM, thread waiting, memory (page faults,
zeroing, allocation), element-wise/dispatch in LibTorch, affinage's own code, dynamic loading, Python, other.
Debian's LibTorch has no symbol table (its internal kernels show as addresses), so the split is by library and
by the symbols that are there; deep LibTorch stacks defeat call-graph attribution, self time does not.

Usage: perf report -i perf.data --no-children --sort dso,sym -g none --stdio > self.txt
       /usr/bin/python3 bench/perf_categories.py self.txt [more.txt ...]"""
import re
import sys

KERNEL_SCHED = ("sched_yield", "schedule", "finish_task_switch", "futex", "raw_spin_unlock_irqrestore", "syscall",
                "pick_next", "update_curr", "enqueue", "dequeue", "try_to_wake_up", "switch", "hrtimer", "irq")
KERNEL_MEM = ("page", "fault", "mm", "mas_", "memcg", "unmap", "lru", "list_del", "folio", "pte", "vma", "tlb",
              "clear_", "zap", "free_", "alloc", "mmap", "brk", "rmqueue", "charge", "memset", "release_pages")


def category(dso, sym):
    if dso.startswith("libopenblas"):
        return "GEMM (OpenBLAS kernels and packing)" if "sgemm" in sym or "dgemm" in sym else "OpenBLAS threads (spin/wait)"
    if dso == "[kernel.kallsyms]":
        s = sym.lower()
        if any(k in s for k in KERNEL_SCHED):
            return "kernel: scheduling, yields, wake-ups"
        if any(k in s for k in KERNEL_MEM):
            return "kernel: page faults, zeroing, unmapping"
        return "kernel: other (I/O, ...)"
    if dso.startswith("libc.so"):
        if any(k in sym for k in ("memset", "memmove", "memcpy", "malloc", "free", "_int_", "calloc")):
            return "libc: memset/memcpy/malloc"
        if "sched_yield" in sym:
            return "kernel: scheduling, yields, wake-ups"
        return "libc: other"
    if dso.startswith(("libtorch", "libc10", "libsleef", "libpthreadpool", "libgomp", "libdnnl", "libmkldnn")):
        return "LibTorch element-wise, reductions, dispatch, autograd"
    if dso == "affinage" or dso.startswith("libaffinage"):
        return "affinage's own code (fused kernels, loop)"
    if dso.startswith("ld-linux"):
        return "dynamic loading (ld.so)"
    if dso.startswith(("python", "libpython")) or "cpython" in dso:
        return "Python interpreter"
    return "other libraries"


def main():
    totals = {}
    line_re = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$")
    for path in sys.argv[1:]:
        with open(path) as f:
            for line in f:
                m = line_re.match(line)
                if m:
                    c = category(m.group(2), m.group(4))
                    totals[c] = totals.get(c, 0.0) + float(m.group(1))
    for c, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{v:6.1f}%  {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
