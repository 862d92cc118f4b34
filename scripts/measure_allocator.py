"""What glibc's allocator thresholds cost PyTorch on this CPU: the generator's fp32 forward pass and a training step
(forward + backward + AdamW, batch 4; ``train-demo``: ``scripts/train_demo.py``'s step, bf16 autocast, batch 8),
each in a fresh process with the system's default thresholds and with ``framegen.keep_freed_memory()``, in one run.

    python scripts/measure_allocator.py [--jobs forward,train,train-demo] [--iterations 12] [--threads 2]

Prints per configuration the wall time per call (median), the CPU time in user and kernel mode and the minor page
faults per call (``getrusage``), and the CPU with its vector extensions, so the figures are ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r"""
import json, resource, statistics, sys, time
import torch
from framegen.models.allocator import keep_freed_memory
from framegen.models.init import init_generator

kept, job, iterations, threads = sys.argv[1] == "kept", sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tuning = keep_freed_memory(int(sys.argv[5])) if kept else None
torch.manual_seed(0)
torch.set_num_threads(threads)
model = init_generator("ave", 1)
batch = {"forward": 1, "train": 4, "train-demo": 8}[job]
x, a = torch.rand(batch, 6, 320, 320), torch.rand(batch, 32, 16, 16)
if job == "train":
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    def call():
        opt.zero_grad(set_to_none=True)
        (model(x, a) - x[:, :3]).abs().mean().backward()
        opt.step()
elif job == "train-demo":  # scripts/train_demo.py's step on a CPU: channels_last, bf16 autocast, batch 8
    model = model.to(memory_format=torch.channels_last).train()
    x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    def call():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x, a)
        loss = (out.float() - x[:, :3]).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
else:
    model.eval()
    def call():
        with torch.no_grad():
            model(x, a)
for _ in range(2):
    call()
walls, r0 = [], resource.getrusage(resource.RUSAGE_SELF)
for _ in range(iterations):
    t = time.perf_counter(); call(); walls.append(time.perf_counter() - t)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall_ms": 1000 * statistics.median(walls),
                  "user_ms": 1000 * (r1.ru_utime - r0.ru_utime) / iterations,
                  "sys_ms": 1000 * (r1.ru_stime - r0.ru_stime) / iterations,
                  "faults": (r1.ru_minflt - r0.ru_minflt) / iterations,
                  "tuning": tuning.reason if tuning else "system defaults"}))
"""


def main() -> int:
    """Run each (job, allocator) pair in its own process and print one table."""
    from framegen.models.allocator import KEEP_FREED_BYTES
    from framegen.toolkit.bench.machine import cpu_description

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--jobs", default="forward,train",
                    help="forward (fp32, batch 1), train (fp32, batch 4), train-demo (train_demo.py's bf16 step)")
    ap.add_argument("--keep-mib", type=int, default=KEEP_FREED_BYTES >> 20, help="the threshold tried, MiB")
    args = ap.parse_args()
    cpu = cpu_description()
    print(f"CPU: {cpu.get('model')} ({cpu.get('physical_cores')} cores; {', '.join(cpu.get('vector_extensions', []))})")
    print(f"{'job':<22}{'allocator':<40}{'wall ms':>9}{'user ms':>9}{'sys ms':>9}{'faults':>9}")
    for job in args.jobs.split(","):
        base = None
        for mode in ("default", "kept"):
            proc = subprocess.run([sys.executable, "-c", _CHILD, mode, job, str(args.iterations), str(args.threads),
                                   str(args.keep_mib << 20)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode:
                print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "child failed", file=sys.stderr)
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            base = base or r["wall_ms"]
            label = {"forward": "forward, batch 1", "train": "train step, batch 4",
                     "train-demo": "train_demo step, b 8"}[job]
            print(f"{label:<22}{r['tuning'][:39]:<40}{r['wall_ms']:>9.1f}{r['user_ms']:>9.1f}{r['sys_ms']:>9.1f}"
                  f"{r['faults']:>9.0f}   x{base / r['wall_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
