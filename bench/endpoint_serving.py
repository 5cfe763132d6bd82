"""Serving an identity scoring script (init() does nothing, run(raw_data) returns json.loads(raw_data)): requests per
second and latency with 8 concurrent clients, each on its own kept-alive HTTP/1.1 connection (bench/_load.py: uvloop,
raw sockets), 20 s each after a 2 s warm-up, side by side in one invocation:

- studio, gateway: the scoring URL of an endpoint through the studio's gateway (`python -m endpoints.gateway`: Bearer
  key checked, traffic split, request recorded) to a deployment on the local target (the scoring server,
  endpoints/serving/studio_serving.py, in the runs' sandbox), and the same on a Docker target when an engine answers
  and has the base image (environment None: the base image's python3);
- studio, direct: the same instance's scoring server hit on its own port, bypassing the gateway; gateway overhead =
  gateway p50 - direct p50 (with the 8 clients, and again with 1 client, sequential requests, 5 s each);
- azmlinfsrv: azureml-inference-server-http 1.5.1 serving the same script file, with its default (one sync gunicorn
  worker: `Connection: close`, so a new connection per request) and with one gthread worker of 8 threads
  (`GUNICORN_CMD_ARGS="--threads 8"`: connections kept alive; one process, as a studio instance is one);
- MLflow: `mlflow models serve` 3.17.2 (`--env-manager local`, its default single uvicorn worker) serving an identity
  pyfunc model, POST /invocations {"inputs": ...}.

All of it shares this machine's cores with the load generator (nothing is pinned): CPU per request of the server side
and of the client is printed so the reader can see who used what. Targets: the studio through the gateway at least as
fast as azmlinfsrv (requests per second) with a p50 no higher (compared with azmlinfsrv's better configuration here);
gateway overhead under 1 ms at p50.

azmlinfsrv and MLflow run from venvs of their own, bench/.azmlinfsrv-venv and bench/.mlflow-serve-venv (gitignored),
made from bench/requirements-azmlinfsrv.txt and bench/requirements-mlflow-serve.txt when missing (a minute or two).

    .venv/bin/python bench/endpoint_serving.py [--seconds 20] [--warmup 2] [--clients 8] [--azml-threads 8]
                                               [--only studio,docker,azmlinfsrv,mlflow] [--keep]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _load  # noqa: E402
import _services  # noqa: E402
import psutil  # noqa: E402

from tests import services  # noqa: E402

ROOT = _services.ROOT
PAYLOAD = json.dumps({"inputs": [[1.0, 2.0, 3.0, 4.0]]}).encode()
AZML_VENV = ROOT / "bench" / ".azmlinfsrv-venv"
AZML_REQUIREMENTS = ROOT / "bench" / "requirements-azmlinfsrv.txt"
MLFLOW_VENV = ROOT / "bench" / ".mlflow-serve-venv"
MLFLOW_REQUIREMENTS = ROOT / "bench" / "requirements-mlflow-serve.txt"
SIDES = ("studio", "docker", "azmlinfsrv", "mlflow")

MLFLOW_MODEL = """\
import sys

import mlflow.pyfunc


class Identity(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.pyfunc.save_model(sys.argv[1], python_model=Identity())
"""


# Tools in venvs of their own -----------------------------------------------------------------------------------------
def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the studio's settings (Django is set up in here), plus `extra`."""
    drop = ("STUDIO_", "DJANGO_", "DATABASE_URL", "MLFLOW_", "PYTHONPATH", "VIRTUAL_ENV", "GUNICORN_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def tool_venv(folder: Path, requirements: Path) -> Path:
    """The venv's bin folder; the venv is made, or brought to the pinned versions, when it does not match them."""
    python = folder / "bin" / "python"
    pins = [line.split("#")[0].strip() for line in requirements.read_text().splitlines()]
    pins = [pin for pin in pins if "==" in pin]
    names = [pin.split("==")[0] for pin in pins]
    check = [str(python), "-c", "import importlib.metadata as m, sys; "
             "print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))", *names]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True).stdout.split()
        if [pin.lower() for pin in found] == [pin.lower() for pin in pins]:
            return folder / "bin"
    where = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
    print(f"# installing {', '.join(pins)} into {where} (first run only; a minute or two)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=False).create(folder)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True,
                   stdout=subprocess.DEVNULL)
    return folder / "bin"


def version_of(bin_dir: Path, package: str) -> str:
    done = subprocess.run([str(bin_dir / "python"), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


# Servers ---------------------------------------------------------------------------------------------------------------
def tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of these processes and all their descendants, as they are now."""
    total, seen = 0.0, set()
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for process in family:
            if process.pid in seen:
                continue
            seen.add(process.pid)
            try:
                times = process.cpu_times()
            except psutil.Error:  # it ended between the listing and now: its time is lost to both readings
                continue
            total += times.user + times.system + times.children_user + times.children_system
    return total


def docker_proxies(port: int) -> list[int]:
    """The engine's `docker-proxy` processes publishing `port` (none when the engine runs without its userland
    proxy)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "docker-proxy" and str(port) in cmdline and "-host-port" in cmdline:
            found.append(process.pid)
    return found


def wait_answers(port: int, path: str, service, timeout: float, what: str, headers: dict | None = None) -> float:
    """Seconds until a POST of the payload answers 200 (raises with the service's log when it exits or times out)."""
    import http.client

    started = time.monotonic()

    def answers():
        if service is not None and service.process.poll() is not None:
            raise RuntimeError(f"{what} exited {service.process.returncode}:\n{service.log()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("POST", path, PAYLOAD, {"Content-Type": "application/json", **(headers or {})})
            ok = connection.getresponse().status == 200
            connection.close()
            return ok
        except (OSError, http.client.HTTPException):
            return False

    try:
        services.wait_until(answers, timeout, what, interval=0.05)
    except TimeoutError:
        raise RuntimeError(f"{what} did not answer 200 within {timeout} s:\n{service.log() if service else ''}") from None
    return time.monotonic() - started


class Measurement:
    def __init__(self, name: str, result: _load.LoadResult, server_cpu: float, gateway_cpu: float | None,
                 client_cpu: float):
        self.name, self.result = name, result
        answered = max(1, result.answered)
        self.server_us = server_cpu / answered * 1e6
        self.gateway_us = None if gateway_cpu is None else gateway_cpu / answered * 1e6
        self.client_us = client_cpu / answered * 1e6


def measure(name: str, port: int, path: str, *, args, clients: int | None = None, seconds: float | None = None,
            headers: dict | None = None, server_pids: list[int], gateway_pid: int | None = None,
            check=None, host: str = "127.0.0.1") -> Measurement:
    server_before = tree_cpu(server_pids)
    gateway_before = tree_cpu([gateway_pid]) if gateway_pid else 0.0
    client_before = time.process_time()
    result = _load.run_load(host, port, path, PAYLOAD, headers=headers, clients=clients or args.clients,
                            seconds=seconds or args.seconds, warmup=args.warmup, check=check)
    client_cpu = time.process_time() - client_before
    gateway_cpu = tree_cpu([gateway_pid]) - gateway_before if gateway_pid else None
    measurement = Measurement(name, result, tree_cpu(server_pids) - server_before, gateway_cpu, client_cpu)
    if result.failures:
        print(f"# {name}: {result.errors} errors, for example: {'; '.join(result.failures[:3])}", flush=True)
    return measurement


def same_payload(body: bytes) -> bool:
    return body == PAYLOAD


def mlflow_answer(body: bytes) -> bool:
    return body.startswith(b'{"predictions"')


# The studio ------------------------------------------------------------------------------------------------------------
def studio_side(stack: _services.EndpointStack, args, target, label: str, results: list, overhead: dict) -> None:
    from endpoints import services as endpoint_services
    from endpoints.gateway import FLUSH_SECONDS
    from endpoints.models import Instance, RequestRecord

    version = stack.register_model(f"identity-{label}", {"README.txt": b"An identity model: the script echoes.\n"})
    endpoint = endpoint_services.create_endpoint(stack.workspace, stack.user, f"identity-{label}")
    started = time.monotonic()
    deployment = endpoint_services.create_deployment(
        endpoint, stack.user, label, model=f"{version.model.name}:{version.version}", compute_target=target,
        script=("score.py", _services.IDENTITY_SCRIPT.encode()), max_concurrent_requests=max(4, 2 * args.clients))
    _services.wait_state(deployment, "Healthy", timeout=300)
    key = endpoint_services.keys(endpoint)["primary"]
    headers = {"Authorization": f"Bearer {key}"}
    path = stack.scoring_path(endpoint)
    wait_answers(stack.gateway_port(), path, None, 30, "the gateway", headers)
    print(f"# {label}: deployment Healthy and answering through the gateway {time.monotonic() - started:.2f} s after "
          f"create_deployment (max_concurrent_requests {deployment.max_concurrent_requests}, 1 instance)", flush=True)
    instance = Instance.objects.get(deployment=deployment, state=Instance.State.READY)
    if instance.handle.startswith("pid:"):
        pids = [int(instance.handle[4:])]
    else:  # a container: its processes, as the host sees them
        import docker

        client = docker.from_env(timeout=30)
        try:
            pids = [int(client.containers.get(instance.handle).attrs["State"]["Pid"])]
        finally:
            client.close()
        pids += docker_proxies(instance.port)  # the engine's userland proxy of the published port carries every byte
    gateway_pid = stack.service("gateway").process.pid
    time.sleep(4 * FLUSH_SECONDS)  # the readiness probes' records are written before counting
    recorded_before = RequestRecord.objects.filter(endpoint=endpoint).count()
    direct = measure(f"studio {label} instance, direct", instance.port, "/score", args=args, server_pids=pids,
                     check=same_payload, host=instance.host)
    through = measure(f"studio gateway -> {label} instance", stack.gateway_port(), path, args=args, headers=headers,
                      server_pids=pids, gateway_pid=gateway_pid, check=same_payload)
    results += [through, direct]
    one_direct = measure(f"{label} direct, 1 client", instance.port, "/score", args=args, clients=1,
                         seconds=args.overhead_seconds, server_pids=pids, check=same_payload, host=instance.host)
    one_through = measure(f"{label} gateway, 1 client", stack.gateway_port(), path, args=args, clients=1,
                          seconds=args.overhead_seconds, headers=headers, server_pids=pids, gateway_pid=gateway_pid,
                          check=same_payload)
    overhead[label] = (through, direct, one_through, one_direct,
                       records_line(endpoint, recorded_before, through.result.answered + one_through.result.answered))


def records_line(endpoint, before: int, answered: int) -> str:
    """How many of the requests answered through the gateway it stored as request records (waiting for its writer)."""
    from endpoints.gateway import FLUSH_SECONDS
    from endpoints.models import RequestRecord

    deadline = time.monotonic() + 30
    stored = 0
    while time.monotonic() < deadline:
        stored = RequestRecord.objects.filter(endpoint=endpoint).count() - before
        if stored >= answered:
            break
        time.sleep(FLUSH_SECONDS)
    return f"request records ({endpoint.name}): the gateway stored {stored:,} for the {answered:,} requests it answered"


# azmlinfsrv and MLflow -------------------------------------------------------------------------------------------------
def azml_side(stack: _services.Stack, args, results: list) -> None:
    bin_dir = tool_venv(AZML_VENV, AZML_REQUIREMENTS)
    release = version_of(bin_dir, "azureml-inference-server-http")
    folder = stack.base / "azmlinfsrv"
    (folder / "model").mkdir(parents=True)
    (folder / "score.py").write_text(_services.IDENTITY_SCRIPT)
    configurations = [
        ("default: 1 sync worker, Connection: close", {}),
        (f'GUNICORN_CMD_ARGS="--threads {args.azml_threads}": 1 gthread worker, kept alive',
         {"GUNICORN_CMD_ARGS": f"--threads {args.azml_threads}"}),
    ]
    for index, (how, extra) in enumerate(configurations):
        port = services.free_port()
        env = clean_env(AZUREML_MODEL_DIR=str(folder / "model"), **extra)
        argv = [str(bin_dir / "azmlinfsrv"), "--entry_script", str(folder / "score.py"), "--port", str(port)]
        server = _services.ChildService(f"azmlinfsrv-{index}", argv, env, folder)
        stack.services.append(server)
        seconds = wait_answers(port, "/score", server, 120, f"azmlinfsrv ({how})")
        print(f"# azmlinfsrv {release} ({how}) answered {seconds:.1f} s after start", flush=True)
        results.append(measure(f"azmlinfsrv {release} {how}", port, "/score", args=args,
                               server_pids=[server.process.pid], check=same_payload))
        stack.services.remove(server)
        _services._stop(server)


def mlflow_side(stack: _services.Stack, args, results: list) -> None:
    bin_dir = tool_venv(MLFLOW_VENV, MLFLOW_REQUIREMENTS)
    release = version_of(bin_dir, "mlflow-skinny")
    folder = stack.base / "mlflow-serve"
    folder.mkdir()
    model = folder / "identity"
    env = clean_env(PATH=f"{bin_dir}:{os.environ.get('PATH', '')}", MLFLOW_TRACKING_URI=f"file://{folder}/mlruns")
    subprocess.run([str(bin_dir / "python"), "-c", MLFLOW_MODEL, str(model)], env=env, cwd=folder, check=True,
                   capture_output=True)
    port = services.free_port()
    argv = [str(bin_dir / "mlflow"), "models", "serve", "-m", str(model), "--env-manager", "local", "-h",
            "127.0.0.1", "-p", str(port)]
    server = _services.ChildService("mlflow-serve", argv, env, folder)
    stack.services.append(server)
    seconds = wait_answers(port, "/invocations", server, 180, "mlflow models serve")
    print(f"# mlflow models serve {release} (default: 1 uvicorn worker) answered {seconds:.1f} s after start",
          flush=True)
    results.append(measure(f"mlflow models serve {release}, 1 uvicorn worker", port, "/invocations", args=args,
                           server_pids=[server.process.pid], check=mlflow_answer))
    stack.services.remove(server)
    _services._stop(server)


# The report ------------------------------------------------------------------------------------------------------------
def table(results: list[Measurement], reference: Measurement | None) -> None:
    print(f"{'':64} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6}  {'server':>6} "
          f"{'gateway':>7} {'client':>6}  {'vs azmlinfsrv':>13}")
    print(f"{'':64} {'':>7} {'':>7} {'':>7} {'':>7} {'':>6}  {'CPU µs per request':^22}  {'req/s':>6} {'p50':>6}")
    for m in results:
        r = m.result
        gateway = f"{m.gateway_us:7.0f}" if m.gateway_us is not None else f"{'':7}"
        ratio = (f"{r.rps / reference.result.rps:5.2f}x {r.p(50) / reference.result.p(50):5.2f}x"
                 if reference else "")
        print(f"{m.name[:64]:64} {r.rps:7.0f} {r.p(50):7.2f} {r.p(95):7.2f} {r.p(99):7.2f} {r.errors:6d}  "
              f"{m.server_us:6.0f} {gateway} {m.client_us:6.0f}  {ratio}")


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=20, help="measured seconds per server (after the warm-up)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before measuring")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, one kept-alive connection each")
    parser.add_argument("--overhead-seconds", type=float, default=5, help="seconds of the 1-client overhead runs")
    parser.add_argument("--azml-threads", type=int, default=8, help="gthread threads of azmlinfsrv's tuned run")
    parser.add_argument("--only", default=",".join(SIDES), help=f"any of {', '.join(SIDES)}")
    args = _services.parse(parser, concurrency=False)
    wanted = set(args.only.split(","))
    unknown = wanted - set(SIDES)
    if unknown:
        parser.error(f"--only takes {', '.join(SIDES)}, not {', '.join(sorted(unknown))}")
    problem = _services.docker_problem() if "docker" in wanted else "not asked for (--only)"
    if problem:
        print(f"# Docker target left out: {problem}", flush=True)
    print(f"# {args.clients} clients, {args.warmup:g} s warm-up + {args.seconds:g} s measured per server, payload "
          f"{PAYLOAD.decode()} ({len(PAYLOAD)} bytes); {os.cpu_count()} cores shared by every process", flush=True)
    results: list[Measurement] = []
    overhead: dict = {}
    with _services.EndpointStack(docker=not problem, keep=args.keep) as stack:
        if "studio" in wanted:
            studio_side(stack, args, stack.local_target, "local", results, overhead)
        if not problem:
            studio_side(stack, args, stack.docker_target, "docker", results, overhead)
        if "azmlinfsrv" in wanted:
            azml_side(stack, args, results)
        if "mlflow" in wanted:
            mlflow_side(stack, args, results)
    azml = [m for m in results if m.name.startswith("azmlinfsrv")]
    reference = max(azml, key=lambda m: m.result.rps) if azml else None
    print()
    table(results, reference)
    print("(client: this process, the load generator; server: the scoring server's processes, with the engine's "
          "docker-proxy of its port for a container; gateway: the gateway's process. CPU over the warm-up and the "
          "measured seconds, per request answered.)")
    for *_measurements, records in overhead.values():
        print(records)
    ok = True
    for label, (through, direct, one_through, one_direct, _) in overhead.items():
        loaded = through.result.p(50) - direct.result.p(50)
        single = one_through.result.p(50) - one_direct.result.p(50)
        stalled = direct.result.p(50) > 20  # the difference of two stalls says nothing about the gateway
        passed = loaded < 1.0 and not stalled
        ok = ok and passed
        print(f"gateway overhead ({label}): p50 {through.result.p(50):.2f} - {direct.result.p(50):.2f} = "
              f"{loaded:.2f} ms with {args.clients} clients; {one_through.result.p(50):.2f} - "
              f"{one_direct.result.p(50):.2f} = {single:.2f} ms with 1 client; target < 1 ms: "
              f"{'NOT JUDGED' if stalled else 'PASS' if passed else 'FAIL'}")
        if stalled:
            print(f"  (the {label} scoring server answers in {direct.result.p(50):.0f} ms even without the gateway: a "
                  "stall of about 40 ms per request, the mark of Nagle's algorithm meeting delayed ACKs when a "
                  "server writes a response's head and body in two sends on a socket without TCP_NODELAY)")
    if reference is not None:
        for label, (through, *_rest) in overhead.items():
            faster = through.result.rps >= reference.result.rps
            quicker = through.result.p(50) <= reference.result.p(50)
            ok = ok and faster and quicker
            print(f"studio through the gateway ({label}) vs {reference.name}: "
                  f"{through.result.rps / reference.result.rps:.2f}x the requests per second, "
                  f"{through.result.p(50) / reference.result.p(50):.2f}x the p50; target >= 1x and <= 1x: "
                  f"{'PASS' if faster and quicker else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
