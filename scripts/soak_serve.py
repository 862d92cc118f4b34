"""Memory of `framegen serve` under a long run of requests: does anything grow per request?

    python scripts/soak_serve.py --bundle B [--requests 2000] [--clients 2] [--bad-every 10]

Starts `framegen serve` (ort-cpu) on free loopback ports, sends ``--requests`` generator requests from ``--clients``
concurrent gRPC clients (every ``--bad-every``-th one malformed: a NaN in the image, which the server refuses and
keeps serving), and samples the resident memory (RSS, from /proc) of every process of the server's tree (the
framegen process, tritonserver, the Python-backend stubs) after every 10 % of the requests. Prints the samples and
the growth per 1000 requests over the second half of the run (the first half includes warm-up: allocator pools,
ONNX Runtime's arena, Triton's first batches).
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tree(pid: int) -> list[int]:
    """``pid`` and every descendant (from /proc/*/stat's parent field)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def _rss_mb(pid: int) -> dict[str, float]:
    """RSS in MB per process name of ``pid``'s tree."""
    sizes: dict[str, float] = {}
    for p in _tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        name = next(line.split()[1] for line in status.splitlines() if line.startswith("Name:"))
        rss = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        sizes[name] = sizes.get(name, 0.0) + rss / 1024
    return sizes


def main() -> None:
    """Run the soak and print the memory samples."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--bad-every", type=int, default=10)
    args = ap.parse_args()
    import tritonclient.grpc as grpcclient

    http, grpc, metrics = _free_ports(3)
    cmd = [sys.executable, "-m", "framegen.toolkit.cli", "serve", "--bundle", args.bundle, "--backend", "ort-cpu",
           "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if client.is_model_ready("generator"):
                break
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    rng = np.random.default_rng(0)
    image = rng.random((1, 6, 320, 320), dtype=np.float32)
    audio = np.abs(rng.normal(size=(1, 32, 16, 16))).astype(np.float32)
    bad = image.copy()
    bad[0, 0, 0, 0] = np.nan
    sent = 0
    errors = {"refused as asked": 0, "unexpected": 0}
    unexpected: list[str] = []
    lock = threading.Lock()
    samples: list[tuple[int, dict[str, float]]] = [(0, _rss_mb(proc.pid))]
    step = max(1, args.requests // 10)

    def worker() -> None:
        nonlocal sent
        c = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        while True:
            with lock:
                if sent >= args.requests:
                    return
                sent += 1
                k = sent
            malformed = args.bad_every and k % args.bad_every == 0
            ins = [grpcclient.InferInput("image", list(image.shape), "FP32"),
                   grpcclient.InferInput("audio", list(audio.shape), "FP32")]
            ins[0].set_data_from_numpy(bad if malformed else image)
            ins[1].set_data_from_numpy(audio)
            try:
                c.infer("generator", ins, client_timeout=60)
                if malformed:
                    errors["unexpected"] += 1
                    unexpected.append(f"request {k}: a NaN image was served")
            except Exception as exc:
                errors["refused as asked" if malformed else "unexpected"] += 1
                if not malformed:
                    unexpected.append(f"request {k}: {str(exc).splitlines()[0][:200]}")
            if k % step == 0:
                with lock:
                    samples.append((k, _rss_mb(proc.pid)))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(90)
    names = sorted({n for _, s in samples for n in s}, key=lambda n: -samples[-1][1].get(n, 0))
    print(f"{args.requests} requests from {args.clients} clients in {seconds:.0f} s; every {args.bad_every}th "
          f"malformed; errors {errors}; server exit {code}")
    print("requests " + " ".join(f"{n[:14]:>15}" for n in names) + "      total")
    for k, s in sorted(samples):
        print(f"{k:8d} " + " ".join(f"{s.get(n, 0.0):15.1f}" for n in names) + f" {sum(s.values()):10.1f}")
    for line in unexpected[:5]:
        print(f"unexpected: {line}")
    half = [(k, sum(s.values())) for k, s in sorted(samples) if k >= args.requests // 2]
    if len(half) >= 2:
        (k0, m0), (k1, m1) = half[0], half[-1]
        print(f"growth over the second half: {1000 * (m1 - m0) / (k1 - k0):+.1f} MB per 1000 requests")


if __name__ == "__main__":
    main()
