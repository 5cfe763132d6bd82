"""Resubmitting a large source folder after changing one file, through the SDK's `upload_folder` (only what the
workspace does not hold is sent) against a real web server (a throwaway studio: Redis, migrated SQLite, uvicorn; no
worker: the runs stay Queued, which the figures do not need).

A folder of 1,500 files (random bytes, 200 MiB in all, sizes spread from 1 KB to about 1 MB, in 30 subfolders, an
.amlignore leaving a __pycache__ folder out) is submitted once: `upload_folder`, then `POST .../runs` with the
snapshot id. Then, `--repeat` times: one 10 KB file gets new random bytes and the folder is submitted again. Reported
for each resubmission: the bytes sent (file bytes plus the JSON manifest, as the SDK counted them; the file bytes as
the studio counted them), their share of the folder, and the wall time from the call to `upload_folder` to the
submit's 201, with its steps. Targets: under 1 % of the folder sent, under 1 s (the median is judged).

The SDK's hash cache (in the bench's temporary folder) remembers files hashed at least 2 s after their last change,
so the bench lets the new folder settle for 2 s before the first submission, as a checkout older than that would be.
`--no-cache` hashes every file on every submission instead.

    .venv/bin/python bench/snapshot_resubmit.py [--files 1500] [--size-mb 200] [--changed-kb 10] [--repeat 5]
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402

sys.path.insert(0, str(_services.ROOT / "sdk"))

from studio_sdk import _snapshot  # noqa: E402

TARGET_SHARE = 0.01
TARGET_SECONDS = 1.0


def make_folder(root: Path, files: int, total: int, changed: int, rng: random.Random) -> Path:
    """`files` files of random bytes adding up to `total` (one of them, src/part00/changed.py, `changed` bytes) in
    30 subfolders, an .amlignore, and an ignored __pycache__ folder. The path of the file to change."""
    (root / "__pycache__").mkdir(parents=True)
    for index in range(20):
        (root / "__pycache__" / f"m{index}.pyc").write_bytes(os.urandom(5000))
    ignore = b"__pycache__/\n*.tmp\n"
    (root / ".amlignore").write_bytes(ignore)
    others = files - 2  # besides .amlignore and the file to change
    weights = [rng.lognormvariate(0, 1.2) for _ in range(others)]
    scale = (total - changed - len(ignore)) / sum(weights)
    sizes = [max(1000, int(weight * scale)) for weight in weights]
    sizes[-1] += total - changed - len(ignore) - sum(sizes)  # exact total
    for index, size in enumerate(sizes):
        target = root / "src" / f"part{index % 30:02d}" / f"file_{index:04d}.bin"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(rng.randbytes(size))
    changed_path = root / "src" / "part00" / "changed.py"
    changed_path.write_bytes(rng.randbytes(changed))
    return changed_path


def submit(http, folder: Path, cache) -> tuple[float, int, _snapshot.Stats]:
    """upload_folder, then the run's submission with the snapshot: (wall seconds, run id, stats)."""
    started = time.perf_counter()
    snapshot_id, stats = _snapshot.upload_folder(http, _services.WORKSPACE, folder, hash_cache=cache)
    response = http.call("POST", f"/workspaces/{_services.WORKSPACE}/runs",
                         body=f"experiment=resubmit&entry_script=src/part00/changed.py&snapshot_id={snapshot_id}"
                         .encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    elapsed = time.perf_counter() - started
    if response.status != 201:
        raise RuntimeError(f"submit failed: HTTP {response.status} {response.body[:500]!r}")
    return elapsed, response.json()["id"], stats


def describe(stats: _snapshot.Stats) -> str:
    steps = " ".join(f"{step} {seconds * 1000:.0f}" for step, seconds in stats.timings.items())
    return (f"hashed {stats.hashed_files:,} files ({stats.hashed_bytes / 2**20:,.1f} MiB), sent {stats.files_sent} "
            f"file(s) {stats.bytes_sent:,} B + manifest {stats.request_bytes:,} B; studio counted "
            f"{stats.uploaded_files} file(s) {stats.uploaded_bytes:,} B; steps (ms): {steps}")


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--files", type=int, default=1500)
    parser.add_argument("--size-mb", type=int, default=200, help="MiB")
    parser.add_argument("--changed-kb", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-cache", action="store_true", help="hash every file on every submission")
    args = _services.parse(parser, concurrency=False)
    total, changed = args.size_mb * 2**20, args.changed_kb * 1000
    with _services.Stack(worker=False, keep=args.keep) as stack:
        from studio.models import ApiToken

        http = _snapshot.Http(stack.url, ApiToken.issue(stack.user, "bench")[1])
        folder = stack.base / "project"
        rng = random.Random(1500)
        made = time.perf_counter()
        changed_path = make_folder(folder, args.files, total, changed, rng)
        print(f"# folder: {args.files:,} files, {total:,} bytes, made in {time.perf_counter() - made:.1f} s", flush=True)
        time.sleep(2.1)  # settled: the hash cache trusts files last changed at least 2 s before hashing
        cache = False if args.no_cache else stack.base / "hashes.json"

        elapsed, run_id, stats = submit(http, folder, cache)
        print(f"first submission: {elapsed:.2f} s, run {run_id}; {stats.files:,} files kept, {stats.ignored} left out "
              f"by {stats.ignore_file}; {describe(stats)}", flush=True)

        times, shares = [], []
        for index in range(args.repeat):
            changed_path.write_bytes(rng.randbytes(changed))
            elapsed, run_id, stats = submit(http, folder, cache)
            sent = stats.total_sent
            share = sent / stats.bytes
            times.append(elapsed)
            shares.append(share)
            print(f"resubmission {index + 1}: {elapsed * 1000:.0f} ms, sent {sent:,} B = {share * 100:.3f} % of the "
                  f"folder; {describe(stats)}", flush=True)
            if stats.uploaded_bytes != changed:
                raise RuntimeError(f"the studio received {stats.uploaded_bytes:,} bytes, not the {changed:,} changed")
    median = statistics.median(times)
    worst_share = max(shares)
    ok_time, ok_share = median < TARGET_SECONDS, worst_share < TARGET_SHARE
    print(f"resubmit after changing one {args.changed_kb} KB file of a {args.size_mb} MiB, {args.files:,}-file folder, "
          f"over {args.repeat}: median {median:.3f} s, max {max(times):.3f} s; sent at most {worst_share * 100:.3f} % "
          f"of the folder; targets < {TARGET_SECONDS:.0f} s: {'PASS' if ok_time else 'FAIL'}, < "
          f"{TARGET_SHARE * 100:.0f} %: {'PASS' if ok_share else 'FAIL'}")
    return 0 if ok_time and ok_share else 1


if __name__ == "__main__":
    sys.exit(main())
