"""Cold image build by the studio versus a plain `docker build` of the same generated Dockerfile and context.

The definition: three small pure-Python packages (six, idna, attrs, pinned) on the default base image. Every build
is cold: the definition starts with a base Dockerfile `FROM <base>` + `RUN echo bench-<nonce>-<side>-<n>`, so the step
right after FROM differs each time and no later step can come from the layer cache, on either side (the plain build
also gets `--no-cache`). A varying step placed after the studio's CA-bundle lines would let the studio reuse the
cached first layers while the plain build rebuilt them.

- studio: `builds.build(image_id)` timed in this process (wall clock): claim, context tar, build through the
  Docker API with the log streamed to a file and to Redis, the image inspected, `pip freeze` read from a container.
- plain: the same files the studio sends (Dockerfile from `Definition.dockerfile(ca_bundle=True)`, requirements.txt,
  the CA bundle as studio-ca-bundle.crt) in a folder, `docker build --no-cache -t <tag> <dir>` (the CLI), wall clock.

One untimed build on each side warms up (the first builds after start are slower, whichever side makes them);
then studio and plain alternate, three each, the order swapped every round. Overhead = (median studio - median plain) / median plain. Target: under 10 %.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402
from _services import BASE_IMAGE, CA_BUNDLE, DockerStack  # noqa: E402

TARGET_PERCENT = 10.0
PACKAGES = "six==1.16.0\nidna==3.10\nattrs==25.3.0"


def base_dockerfile(nonce: str, label: str) -> str:
    return f"FROM {BASE_IMAGE}\nRUN echo bench-{nonce}-{label}"


def plain_build(stack: DockerStack, label: str, folder: Path) -> float:
    """`docker build --no-cache` of exactly what the studio would send for this definition; seconds, wall clock."""
    from environments.models import Environment, EnvironmentKind

    definition = Environment(
        kind=EnvironmentKind.SYSTEM_MANAGED,
        python_packages=PACKAGES,
        base_dockerfile=base_dockerfile(stack.nonce, label),
    ).definition()
    context = folder / label
    context.mkdir()
    (context / "Dockerfile").write_text(definition.dockerfile(ca_bundle=True))
    (context / "requirements.txt").write_text("\n".join(definition.all_pip_packages) + "\n")
    shutil.copyfile(CA_BUNDLE, context / "studio-ca-bundle.crt")
    tag = f"studio/env_bench-plain-{stack.nonce}-{label}"
    stack.images.append(tag)
    started = time.perf_counter()
    result = subprocess.run(["docker", "build", "--no-cache", "-t", tag, str(context)], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"docker build failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return seconds


def studio_build(stack: DockerStack, label: str) -> tuple[float, float]:
    """Seconds of `builds.build`, and of them the part after the engine's build output ended."""
    _environment, image, seconds = stack.build_environment(
        f"bench-build-{label}", packages=PACKAGES, base_dockerfile=base_dockerfile(stack.nonce, label)
    )
    return seconds, after_engine_output(image.pk)


def after_engine_output(image_id: int) -> float:
    """From the build's last log entry to its Succeeded status, read from the build's Redis stream (entry ids are
    millisecond times): inspecting the image, reading `pip freeze` from a container, recording the result."""
    from environments import builds
    from studio.redis_client import get_redis

    last_log = succeeded = None
    for entry_id, fields in get_redis().xrange(builds.stream_key(image_id)):
        at = int(entry_id.split(b"-")[0]) / 1000
        if fields.get(b"k") == b"log":
            last_log = at
        elif fields.get(b"k") == b"status" and fields.get(b"v") == b"Succeeded":
            succeeded = at
    return succeeded - last_log if last_log is not None and succeeded is not None else float("nan")


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="builds per side")
    args = _services.parse(parser, concurrency=False)

    times: dict[str, list[float]] = {"studio": [], "plain": []}
    tails: list[float] = []
    with DockerStack(keep=args.keep) as stack, tempfile.TemporaryDirectory(prefix="studio-bench-plain-") as folder:
        folder = Path(folder)
        print(f"# packages {PACKAGES.replace(chr(10), ', ')} on {BASE_IMAGE}; CA bundle {CA_BUNDLE}", flush=True)
        # The first builds after the services start are slower whichever side makes them: warm both sides up.
        warm_plain = plain_build(stack, "warmup-plain", folder)
        warm_studio, _tail = studio_build(stack, "warmup-studio")
        print(f"# warm-up (not counted): plain {warm_plain:.2f} s, studio {warm_studio:.2f} s", flush=True)
        print(f"{'#':>3} {'side':<7} {'seconds':>8} {'after engine':>13}")
        for index in range(args.rounds):
            order = ("studio", "plain") if index % 2 == 0 else ("plain", "studio")
            for side in order:
                label = f"{side}-{index + 1}"
                if side == "studio":
                    seconds, tail = studio_build(stack, label)
                    tails.append(tail)
                    print(f"{index + 1:>3} {side:<7} {seconds:8.2f} {tail:13.2f}", flush=True)
                else:
                    seconds = plain_build(stack, label, folder)
                    print(f"{index + 1:>3} {side:<7} {seconds:8.2f}", flush=True)
                times[side].append(seconds)

    studio, plain = statistics.median(times["studio"]), statistics.median(times["plain"])
    overhead = (studio - plain) / plain * 100
    verdict = "PASS" if overhead < TARGET_PERCENT else "FAIL"
    paired = [(s - p) / p * 100 for s, p in zip(times["studio"], times["plain"], strict=True)]
    print(
        "columns: seconds = wall clock of builds.build (studio) or of the docker build command (plain); after engine "
        "= of the studio's seconds, the part after the engine's last build output (image inspected, pip freeze read "
        "from a container, result recorded), from the build's Redis stream"
    )
    print(
        f"# per round (studio - plain) / plain: {', '.join(f'{d:+.1f} %' for d in paired)}; the studio's part after "
        f"the engine's output: median {statistics.median(tails):.2f} s"
    )
    print(
        f"cold build over {args.rounds} each: studio median {studio:.2f} s "
        f"({', '.join(f'{s:.2f}' for s in times['studio'])}), plain docker build median {plain:.2f} s "
        f"({', '.join(f'{s:.2f}' for s in times['plain'])}); overhead {overhead:+.1f} %; "
        f"target < {TARGET_PERCENT:.0f} %: {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
