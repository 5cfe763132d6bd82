"""Deploying and updating a model on the studio's endpoints, on a throwaway studio with the scoring gateway and the
endpoints' controller (`manage.py serve_endpoints`) running as `studioctl.py start` runs them:

1. deploy: the time from `endpoints.services.create_deployment` (what the deploy button and the REST API call) to the
   deployment's state Healthy, and to the first 200 through the gateway (a POST every 10 ms, with the endpoint's key),
   5 times per case (a fresh endpoint each time, deleted afterwards), median and max; with a cached environment:
   none (the target's own interpreter: the run interpreter locally, the base image's python3 on Docker) and a
   system-managed environment made beforehand (its virtualenv locally, its image on Docker). Also shown: when the
   controller started the instance. Target: under 3 s to the first 200.
2. rolling update: 4 client threads POST back to back through the gateway (one kept-alive connection each) while
   `update_deployment` gives the deployment a new model version, then a new scoring script; each answer says which
   model and script made it. Counted: failed requests (any status but 200, or no answer; target 0), the time from the
   update to the first answer of the new revision, to the last answer of the old one, and to the old instance's
   removal.

On the local target always; on a Docker target too when an engine answers and has the base image
(studio/base-python:bookworm).

    .venv/bin/python bench/endpoint_deploy.py [--repeat 5] [--environments none,prebuilt] [--only deploy,rolling]
                                              [--targets local,docker] [--keep]
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _services  # noqa: E402

PAYLOAD = json.dumps({"inputs": [[1.0, 2.0, 3.0, 4.0]]}).encode()
TARGET_SECONDS = 3.0
REVISION_SCRIPT = """\
import json
import os

SCRIPT = "{script}"


def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "version.txt")) as handle:
        model = handle.read().strip()


def run(raw_data):
    return {{"model": model, "script": SCRIPT, "echo": json.loads(raw_data)}}
"""


def post(connection: http.client.HTTPConnection, path: str, headers: dict) -> tuple[int, bytes]:
    connection.request("POST", path, PAYLOAD, headers)
    response = connection.getresponse()
    return response.status, response.read()


# Deploy to the first 200 -----------------------------------------------------------------------------------------------
def prebuilt_environment(stack: _services.EndpointStack, kind: str):
    """A system-managed environment with its virtualenv (local) or image (Docker) made now, before any timing."""
    from environments import venvs
    from environments.models import Environment, EnvironmentKind
    from studio import sandbox

    if kind == "local":
        environment = Environment(workspace=stack.workspace, name="bench-deploy-local",
                                  kind=EnvironmentKind.SYSTEM_MANAGED).save_new_version()
        started = time.perf_counter()
        venvs.ensure_venv(environment, base_python=sandbox.run_python())
        print(f"# made the virtualenv of {environment} in {time.perf_counter() - started:.1f} s (before any timing)",
              flush=True)
        return environment
    environment, image, seconds = _services.DockerStack.build_environment(
        stack, "bench-deploy-docker", steps=f"RUN echo endpoint-deploy-{stack.nonce}")
    print(f"# built {image.name} for {environment} in {seconds:.1f} s (before any timing)", flush=True)
    return environment


def deploy_once(stack: _services.EndpointStack, target, environment, version, name: str) -> dict:
    """Create an endpoint and its deployment; seconds to each milestone, then delete the endpoint."""
    from endpoints import services as endpoint_services
    from endpoints.models import Deployment, DeploymentState, Endpoint, Instance

    endpoint = endpoint_services.create_endpoint(stack.workspace, stack.user, name)
    headers = {"Authorization": f"Bearer {endpoint_services.keys(endpoint)['primary']}",
               "Content-Type": "application/json"}
    path = stack.scoring_path(endpoint)
    connection = http.client.HTTPConnection("127.0.0.1", stack.gateway_port(), timeout=10)
    wall = time.time()
    started = time.perf_counter()
    deployment = endpoint_services.create_deployment(
        endpoint, stack.user, "blue", model=f"{version.model.name}:{version.version}", compute_target=target,
        environment=environment, script=("score.py", _services.IDENTITY_SCRIPT.encode()))
    created = time.perf_counter() - started
    healthy = first = None
    while healthy is None or first is None:
        now = time.perf_counter() - started
        if now > 120:
            deployment.refresh_from_db()
            raise RuntimeError(f"{name}: no 200 after 120 s; the deployment is {deployment.state}: {deployment.reason}")
        if healthy is None:
            state, reason = Deployment.objects.filter(pk=deployment.pk).values_list("state", "reason").get()
            if state == DeploymentState.HEALTHY:
                healthy = time.perf_counter() - started
            elif state == DeploymentState.FAILED:
                raise RuntimeError(f"{name}: the deployment failed: {reason}")
        if first is None:
            try:
                status, body = post(connection, path, headers)
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", stack.gateway_port(), timeout=10)
            else:
                if status == 200 and body == PAYLOAD:
                    first = time.perf_counter() - started
        time.sleep(0.01)
    connection.close()
    instance = Instance.objects.filter(deployment=deployment).first()
    instance_started = instance.started_at.timestamp() - wall if instance and instance.started_at else float("nan")
    endpoint_services.delete_endpoint(endpoint, stack.user)
    deadline = time.monotonic() + 60
    while Endpoint.objects.filter(pk=endpoint.pk).exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the controller stops its instance and removes it before the next one
    return {"create": created, "started": instance_started, "healthy": healthy, "first": first}


def bench_deploy(stack: _services.EndpointStack, targets: dict, environments: list[str], repeat: int) -> bool:
    version = stack.register_model("deploy-identity", {"README.txt": b"An identity model: the script echoes.\n"})
    ok = True
    rows = []
    for kind, target in targets.items():
        for which in environments:
            environment = prebuilt_environment(stack, kind) if which == "prebuilt" else None
            described = "no environment" if environment is None else f"environment {environment} (made beforehand)"
            print(f"{kind}, {described}:", flush=True)
            print(f"{'#':>4} {'create':>8} {'started':>8} {'Healthy':>8} {'first 200':>10}  (seconds from "
                  "create_deployment)")
            firsts = []
            for index in range(repeat + 1):
                result = deploy_once(stack, target, environment, version, f"deploy-{kind}-{which}-{index}")
                row = (f"{'w' if index == 0 else index:>4} {result['create']:8.3f} {result['started']:8.3f} "
                       f"{result['healthy']:8.3f} {result['first']:10.3f}")
                print(row + ("  (warm-up, not counted)" if index == 0 else ""), flush=True)
                if index:
                    firsts.append(result)
            median = statistics.median(r["first"] for r in firsts)
            worst = max(r["first"] for r in firsts)
            passed = worst < TARGET_SECONDS
            ok = ok and passed
            rows.append(f"deploy ({kind}, {described}) -> first 200 through the gateway over {repeat}: median "
                        f"{median:.2f} s, max {worst:.2f} s (Healthy: median "
                        f"{statistics.median(r['healthy'] for r in firsts):.2f} s, max "
                        f"{max(r['healthy'] for r in firsts):.2f} s); target < {TARGET_SECONDS:g} s: "
                        f"{'PASS' if passed else 'FAIL'}")
    print()
    for row in rows:
        print(row)
    return ok


# Rolling update under traffic ------------------------------------------------------------------------------------------
class Traffic:
    """`clients` threads POSTing back to back through the gateway, each answer kept as (sent, received, status,
    model, script); a request that gets no answer is kept with status 0."""

    def __init__(self, port: int, path: str, key: str, clients: int):
        self.port, self.path, self.clients = port, path, clients
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.answers: list[tuple[float, float, int, str, str]] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _client(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.stopping.is_set():
            sent = time.perf_counter()
            try:
                status, body = post(connection, self.path, self.headers)
            except (OSError, http.client.HTTPException) as error:
                self.answers.append((sent, time.perf_counter(), 0, "", ""))
                if len(self.failures) < 10:
                    self.failures.append(f"no answer: {type(error).__name__}: {error}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            received = time.perf_counter()
            model = script = ""
            if status == 200:
                answer = json.loads(body)
                model, script = answer["model"], answer["script"]
            elif len(self.failures) < 10:
                self.failures.append(f"HTTP {status}: {body[:200]!r}")
            self.answers.append((sent, received, status, model, script))
        connection.close()


def wait_first_200(stack: _services.EndpointStack, endpoint, key: str, timeout: float = 30) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", stack.gateway_port(), timeout=10)
        try:
            answered = post(connection, stack.scoring_path(endpoint), headers)[0] == 200
        except (OSError, http.client.HTTPException):
            answered = False  # the gateway is not listening yet, or dropped the connection: ask again
        finally:
            connection.close()
        if answered:
            return
        time.sleep(0.01)
    raise RuntimeError(f"{endpoint.name} did not answer 200 through the gateway within {timeout} s")


def wait_rolled(deployment, revision: int, timeout: float = 120) -> tuple[float, float]:
    """Seconds until the deployment is Healthy on `revision`, and until no instance of an older revision is left."""
    from endpoints.models import Deployment, DeploymentState, Instance

    started = time.perf_counter()
    healthy = removed = None
    while healthy is None or removed is None:
        if time.perf_counter() - started > timeout:
            deployment.refresh_from_db()
            raise RuntimeError(f"revision {revision} not rolled out after {timeout} s: {deployment.state} "
                               f"({deployment.reason})")
        state, live, reason = Deployment.objects.filter(pk=deployment.pk).values_list(
            "state", "live_revision", "reason").get()
        if state == DeploymentState.FAILED:
            raise RuntimeError(f"revision {revision} failed: {reason}")
        if healthy is None and state == DeploymentState.HEALTHY and live == revision:
            healthy = time.perf_counter() - started
        if removed is None and live == revision and not Instance.objects.filter(
                deployment=deployment, revision__lt=revision).exists():
            removed = time.perf_counter() - started
        time.sleep(0.02)
    return healthy, removed


def bench_rolling(stack: _services.EndpointStack, targets: dict, clients: int, settle: float) -> bool:
    from endpoints import services as endpoint_services

    ok = True
    summary = []
    for kind, target in targets.items():
        first = stack.register_model(f"rolling-{kind}", {"version.txt": b"1\n"})
        second = stack.register_model(f"rolling-{kind}", {"version.txt": b"2\n"})
        endpoint = endpoint_services.create_endpoint(stack.workspace, stack.user, f"rolling-{kind}")
        deployment = endpoint_services.create_deployment(
            endpoint, stack.user, "blue", model=f"{first.model.name}:{first.version}", compute_target=target,
            script=("score.py", REVISION_SCRIPT.format(script="a").encode()))
        _services.wait_state(deployment, "Healthy", timeout=120)
        key = endpoint_services.keys(endpoint)["primary"]
        wait_first_200(stack, endpoint, key)  # the gateway has the endpoint: the traffic starts on a served endpoint
        updates = [
            ("new model version", {"model": f"{second.model.name}:{second.version}"}, ("1", "a"), ("2", "a")),
            ("new scoring script", {"script": ("score.py", REVISION_SCRIPT.format(script="b").encode())},
             ("2", "a"), ("2", "b")),
        ]
        print(f"{kind}: {clients} client threads through the gateway; request timeout "
              f"{deployment.request_timeout_ms / 1000:g} s (a replaced instance drains that long and a margin)",
              flush=True)
        print(f"{'update':22} {'requests':>8} {'failed':>6} {'first new':>9} {'last old':>9} {'Healthy':>8} "
              f"{'old gone':>8}  (seconds from update_deployment)")
        with Traffic(stack.gateway_port(), stack.scoring_path(endpoint), key, clients) as traffic:
            time.sleep(settle)
            for what, change, old, new in updates:
                begin = len(traffic.answers)
                at = time.perf_counter()
                deployment = endpoint_services.update_deployment(deployment, stack.user, **change)
                healthy, removed = wait_rolled(deployment, deployment.revision)
                time.sleep(settle)
                answers = traffic.answers[begin:]
                failed = sum(1 for a in answers if a[2] != 200)
                news = [a[1] - at for a in answers if (a[3], a[4]) == new]
                olds = [a[1] - at for a in answers if (a[3], a[4]) == old]
                strays = [a for a in answers if a[2] == 200 and (a[3], a[4]) not in (old, new)]
                first_new = min(news) if news else float("nan")
                last_old = max(olds) if olds else float("nan")
                ok = ok and failed == 0 and not strays and bool(news)
                print(f"{what:22} {len(answers):8d} {failed:6d} {first_new:9.2f} {last_old:9.2f} {healthy:8.2f} "
                      f"{removed:8.2f}" + (f"  ({len(strays)} answers from neither revision)" if strays else ""),
                      flush=True)
                summary.append((kind, what, len(answers), failed, first_new))
        if traffic.failures:
            print(f"# {kind}: failures, for example: {'; '.join(traffic.failures[:5])}")
        total = len(traffic.answers)
        failed = sum(1 for a in traffic.answers if a[2] != 200)
        summary.append((kind, "all", total, failed, None))
        endpoint_services.delete_endpoint(endpoint, stack.user)
    print()
    for kind, what, total, failed, first_new in summary:
        if what == "all":
            print(f"rolling updates ({kind}): {failed} failed of {total:,} requests under traffic; target 0: "
                  f"{'PASS' if failed == 0 else 'FAIL'}")
        else:
            print(f"  {what} ({kind}): new revision answering {first_new:.2f} s after update_deployment, "
                  f"{failed} failed of {total:,}")
    return ok


def main() -> int:
    parser = _services.parser(__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="deployments per case (after one warm-up)")
    parser.add_argument("--environments", default="none,prebuilt", help="none and/or prebuilt")
    parser.add_argument("--only", default="deploy,rolling", help="deploy and/or rolling")
    parser.add_argument("--targets", default="local,docker", help="local and/or docker (when an engine answers)")
    parser.add_argument("--clients", type=int, default=4, help="client threads during the rolling updates")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of steady traffic around each update")
    args = _services.parse(parser, concurrency=False)
    wanted, kinds = set(args.only.split(",")), args.targets.split(",")
    problem = _services.docker_problem() if "docker" in kinds else "not asked for (--targets)"
    if problem:
        print(f"# Docker target left out: {problem}", flush=True)
    ok = True
    with _services.EndpointStack(docker=not problem, keep=args.keep) as stack:
        targets = {"local": stack.local_target} if "local" in kinds else {}
        if not problem:
            targets["docker"] = stack.docker_target
        if "deploy" in wanted:
            ok = bench_deploy(stack, targets, args.environments.split(","), args.repeat) and ok
        if "rolling" in wanted:
            ok = bench_rolling(stack, targets, args.clients, args.settle) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
