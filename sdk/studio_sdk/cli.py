"""`studio`: the studio from a shell (standard library only, installed with the SDK).

    studio login --url http://127.0.0.1:8000 --workspace default      # asks for the token (or STUDIO_TOKEN)
    studio experiment submit -c local -e digits --environment Studio-sklearn --wait train.py --epochs 20
    studio run logs -f 42
    studio run download 42 outputs/
    studio model list
    studio endpoint invoke digits -f sample.json

Tables for people, `--output json` for scripts. Exit codes: 0 done; 1 the studio refused or a run/deployment failed
(the message says why, on stderr); 2 wrong usage; 3 a followed run was canceled; 4 the studio could not be reached.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from studio_sdk._api import StudioError, quote
from studio_sdk.compute import ComputeTarget
from studio_sdk.environment import Environment
from studio_sdk.experiment import FINAL, RemoteRun, ScriptRunConfig, follow_console
from studio_sdk.model import Model
from studio_sdk.webservice import Webservice
from studio_sdk.workspace import Workspace, read_credentials, write_credentials

EXIT = {"Completed": 0, "Failed": 1, "Canceled": 3}


class Output:
    def __init__(self, mode: str):
        self.mode = mode

    def show(self, data, columns: list[str] | None = None, *, title: str = "") -> None:
        if self.mode == "json":
            print(json.dumps(data, indent=2, default=str))
            return
        if isinstance(data, list):
            self.table(data, columns)
        elif isinstance(data, dict):
            width = max((len(str(k)) for k in data), default=0)
            for key, value in data.items():
                if isinstance(value, (dict, list)):
                    value = json.dumps(value, default=str)
                print(f"{str(key).ljust(width)}  {value}")
        else:
            print(data)

    @staticmethod
    def table(rows: list[dict], columns: list[str] | None) -> None:
        if not rows:
            print("(none)")
            return
        columns = columns or list(rows[0])
        cells = [[_cell(row.get(column)) for column in columns] for row in rows]
        widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
        print("  ".join(column.upper().ljust(widths[i]) for i, column in enumerate(columns)).rstrip())
        for line in cells:
            print("  ".join(value.ljust(widths[i]) for i, value in enumerate(line)).rstrip())


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _workspace(args) -> Workspace:
    if getattr(args, "workspace", None) or getattr(args, "url", None):
        return Workspace(args.url, args.workspace)
    return Workspace.from_config() if _has_config() else Workspace()


def _has_config() -> bool:
    from studio_sdk.workspace import find_config

    return find_config() is not None


def _pairs(items: list[str] | None, what: str) -> dict:
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r}: write KEY=VALUE.")
        result[key] = value
    return result


class UsageError(Exception):
    pass


# Commands ----------------------------------------------------------------------------------------------------------


def cmd_login(args, out: Output) -> int:
    token = args.token or os.environ.get("STUDIO_TOKEN") or getpass.getpass("API token (from the studio's API "
                                                                             "tokens page): ")
    url = args.url.rstrip("/")
    from studio_sdk._api import Api

    me = Api(url, token).get("/me")
    workspace = args.workspace or (me["workspaces"][0]["name"] if me.get("workspaces") else None)
    path = write_credentials(url, token, workspace)
    print(f"Signed in to {url} as {me['username']}; workspace {workspace or '(none yet)'}. Saved in {path} (0600).",
          file=sys.stderr)
    return 0


def cmd_workspace_list(args, out: Output) -> int:
    out.show(Workspace.list(args.url), ["name", "role"])
    return 0


def cmd_workspace_use(args, out: Output) -> int:
    saved = read_credentials()
    if not saved.get("token"):
        raise UsageError("Run `studio login` first.")
    names = [item["name"] for item in Workspace.list()]
    if args.name not in names:
        raise StudioError(f"You are not a member of a workspace named {args.name!r} (yours: {', '.join(names)}).", 404)
    write_credentials(saved["url"], saved["token"], args.name)
    print(f"Using workspace {args.name}.", file=sys.stderr)
    return 0


def cmd_experiment_list(args, out: Output) -> int:
    ws = _workspace(args)
    page = ws.api.get(ws.path("/experiments"))
    out.show(page["items"], ["name", "runs", "all_runs", "latest_run_at", "archived"])
    return 0


def cmd_experiment_submit(args, out: Output) -> int:
    from studio_sdk.experiment import Experiment

    ws = _workspace(args)
    source = Path(args.source_directory)
    script = args.script
    if source == Path(".") and Path(script).is_file() and Path(script).parent != Path("."):
        source, script = Path(script).parent, Path(script).name
    environment = None
    if args.requirements:
        environment = Environment.from_pip_requirements(args.environment or "requirements", args.requirements)
    elif args.environment:
        environment = args.environment
    config = ScriptRunConfig(source_directory=source, script=script, arguments=args.arguments,
                             compute_target=args.compute_target, environment=environment,
                             max_run_duration_seconds=args.max_duration, environment_variables=_pairs(args.env, "--env"),
                             display_name=args.name or "", tags=_pairs(args.tag, "--tag"))
    run = Experiment(ws, args.experiment).submit(config)
    if out.mode == "json" and not args.wait:
        out.show(run._data)
    else:
        print(f"Run {run.id} submitted: {ws.url}{run._data.get('url', '')}", file=sys.stderr)
    if not args.wait:
        return 0
    follow_console(run, sys.stdout)
    while run.get_status() not in FINAL:  # the console ended with the stream; the status follows within moments
        import time

        time.sleep(0.2)
    status = run.status
    print(f"Run {run.id} {status.lower()}" + (f": {run._data.get('reason')}" if run._data.get("reason") else "."),
          file=sys.stderr)
    return EXIT.get(status, 1)


def cmd_run_list(args, out: Output) -> int:
    ws = _workspace(args)
    path = ws.path(f"/experiments/{quote(args.experiment)}/runs") if args.experiment else ws.path("/runs")
    page = ws.api.get(path, status=args.status or None)
    out.show(page["items"], ["id", "experiment", "display_name", "status", "compute_target", "created_at",
                             "duration_seconds"])
    return 0


def cmd_run_show(args, out: Output) -> int:
    out.show(RemoteRun(_workspace(args), args.run_id).get_details())
    return 0


def cmd_run_logs(args, out: Output) -> int:
    run = RemoteRun(_workspace(args), args.run_id)
    if args.follow:
        status = follow_console(run, sys.stdout)
        return EXIT.get(status, 0) if status in FINAL else 0
    chunk = run.workspace.api.get(run._path("/log"), offset=0)
    offset = 0
    while True:
        sys.stdout.write("".join(line + "\n" for line in chunk["lines"]))
        if chunk["next_offset"] == offset:
            break
        offset = chunk["next_offset"]
        chunk = run.workspace.api.get(run._path("/log"), offset=offset)
    return 0


def cmd_run_cancel(args, out: Output) -> int:
    result = RemoteRun(_workspace(args), args.run_id).cancel()
    out.show(result)
    return 0


def cmd_run_download(args, out: Output) -> int:
    run = RemoteRun(_workspace(args), args.run_id)
    names = [n for n in run.get_file_names() if n.startswith(args.prefix)]
    if not names:
        raise StudioError(f"Run {args.run_id} stored no file under {args.prefix!r}.", 404)
    written = [run.download_file(name, os.path.join(args.output, name)) for name in names]
    if out.mode == "json":
        out.show(written)
    else:
        print(f"{len(written)} file{'s' if len(written) != 1 else ''} written under {args.output}", file=sys.stderr)
    return 0


def cmd_run_metrics(args, out: Output) -> int:
    metrics = RemoteRun(_workspace(args), args.run_id).get_metrics()
    if out.mode == "json":
        out.show(metrics)
        return 0
    rows = []
    for name, value in metrics.items():
        if isinstance(value, list):
            numbers = [v for v in value if isinstance(v, (int, float))]
            rows.append({"name": name, "last": value[-1] if value else None, "count": len(value),
                         "min": min(numbers) if numbers else None, "max": max(numbers) if numbers else None})
        else:
            rows.append({"name": name, "last": value, "count": 1, "min": None, "max": None})
    out.show(rows, ["name", "last", "count", "min", "max"])
    return 0


def cmd_environment_list(args, out: Output) -> int:
    ws = _workspace(args)
    rows = ws.api.get(ws.path("/environments"))
    for row in rows:
        row["image"] = (row.get("image") or {}).get("status")
    out.show(rows, ["name", "version", "kind", "curated", "image", "description"])
    return 0


def _name_version(text: str) -> tuple[str, int | None]:
    name, _, version = text.partition(":")
    if version and not version.isdigit():
        raise UsageError(f"{text!r}: write NAME or NAME:VERSION.")
    return name, int(version) if version else None


def cmd_environment_show(args, out: Output) -> int:
    name, version = _name_version(args.name)
    out.show(Environment.get(_workspace(args), name, version).details)
    return 0


def cmd_environment_create(args, out: Output) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"{args.file} is not a file.")
    if path.suffix in (".yml", ".yaml"):
        env = Environment.from_conda_specification(args.name, str(path))
    else:
        env = Environment.from_pip_requirements(args.name, str(path))
    if args.base_image:
        env.docker.base_image = args.base_image
    registered = env.register(_workspace(args))
    out.show(registered.details if out.mode == "json" else f"{registered.name}:{registered.version} saved.")
    return 0


def cmd_environment_build(args, out: Output) -> int:
    name, version = _name_version(args.name)
    ws = _workspace(args)
    build = Environment.get(ws, name, version).build(ws)
    if args.wait:
        build.wait_for_completion(show_output=out.mode != "json")
    out.show(build.data if out.mode == "json" else f"Image {build.data['name']}: {build.data['status']}.")
    return 0


def cmd_compute_list(args, out: Output) -> int:
    out.show([t.details for t in ComputeTarget.list(_workspace(args))], ["name", "kind", "docker_url", "queue"])
    return 0


def cmd_compute_attach(args, out: Output) -> int:
    target = ComputeTarget.attach_docker(_workspace(args), args.name, args.docker_url,
                                         **({"queue": args.queue} if args.queue else {}))
    out.show(target.details)
    return 0


def cmd_compute_test(args, out: Output) -> int:
    result = ComputeTarget(_workspace(args), args.name).test()
    out.show(result)
    return 0 if result.get("ok", True) else 1


def cmd_model_list(args, out: Output) -> int:
    rows = Model.list(_workspace(args), args.name)
    out.show(rows, ["name", "latest_version", "framework", "aliases", "tags", "last_registered_at"])
    return 0


def cmd_model_show(args, out: Output) -> int:
    details = dict(Model(_workspace(args), args.reference).details)
    if out.mode != "json":
        details["files"] = [f"{f['path']} ({f['size']} B)" for f in details.get("files", [])]
    out.show(details)
    return 0


def cmd_model_register(args, out: Output) -> int:
    model = Model.register(_workspace(args), args.path, args.name, tags=_pairs(args.tag, "--tag"),
                           description=args.description or "")
    out.show(model.details if out.mode == "json" else f"Registered {model.name} version {model.version}.")
    return 0


def cmd_model_download(args, out: Output) -> int:
    target = Model(_workspace(args), args.reference).download(args.output, exist_ok=args.force)
    print(f"Written to {target}", file=sys.stderr)
    return 0


def cmd_model_alias(args, out: Output) -> int:
    model = Model(_workspace(args), args.reference)
    model.set_alias(args.alias)
    print(f"{model.name}@{args.alias} -> version {model.version}", file=sys.stderr)
    return 0


def cmd_endpoint_list(args, out: Output) -> int:
    rows = [s.details for s in Webservice.list(_workspace(args))]
    for row in rows:
        row["deployments"] = [f"{d['name']}:{d['model']} {d['state']}" for d in row["deployments"]]
    out.show(rows, ["name", "state", "deployments", "traffic", "requests_last_hour", "scoring_url"])
    return 0


def cmd_endpoint_show(args, out: Output) -> int:
    details = Webservice(_workspace(args), args.name).details
    if out.mode == "json":
        out.show(details)
        return 0
    out.show({k: v for k, v in details.items() if k != "deployments"})
    print()
    out.show(details["deployments"], ["name", "state", "model", "environment", "compute_target", "instance_count",
                                      "traffic", "mirror", "revision"])
    return 0


def _load_spec(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith((".yml", ".yaml")):
        try:
            import yaml
        except ImportError:
            raise UsageError("Reading YAML needs PyYAML (pip install pyyaml); or write the file as JSON.") from None
        return yaml.safe_load(text)
    return json.loads(text)


def cmd_endpoint_create(args, out: Output) -> int:
    """-f FILE: {"name": ..., "description": ..., "deployments": [{"name", "model", "scoring_script" (a path,
    relative to the file), "environment", "compute_target", "instance_count", ...}], "traffic": {...}}."""
    spec = _load_spec(args.file)
    if not isinstance(spec, dict) or not spec.get("name"):
        raise UsageError(f"{args.file} must hold an object with a name (and deployments).")
    ws = _workspace(args)
    try:
        service = Webservice(ws, spec["name"])
    except StudioError as error:
        if error.status != 404:
            raise
        service = Webservice.create(ws, spec["name"], spec.get("description", ""))
    base = Path(args.file).resolve().parent
    existing = {d["name"] for d in service.details["deployments"]}
    for item in spec.get("deployments", []):
        item = dict(item)
        name = item.pop("name")
        script = item.pop("scoring_script", None)
        if name in existing:
            raise StudioError(f"{spec['name']} already has a deployment {name}: update it in the page or the API.",
                              409)
        service.deploy(name, item.pop("model"), str(base / script) if script else None, **item)
    if spec.get("traffic"):
        service.update_traffic(spec["traffic"], spec.get("mirror"))
    if args.wait:
        service.wait_for_deployment(show_output=True)
    out.show(service.refresh() if out.mode == "json" else f"Endpoint {service.name}: {service.refresh()['state']}; "
             f"scoring URL {service.scoring_uri}")
    return 0


def cmd_endpoint_invoke(args, out: Output) -> int:
    service = Webservice(_workspace(args), args.name)
    if args.file:
        body = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    else:
        body = (args.data or "").encode()
    answer = service.run(body, deployment=args.deployment)
    print(json.dumps(answer, indent=2) if not isinstance(answer, str) else answer)
    return 0


def cmd_endpoint_keys(args, out: Output) -> int:
    primary, secondary = Webservice(_workspace(args), args.name).get_keys()
    out.show({"primary": primary, "secondary": secondary})
    return 0


def cmd_endpoint_regenerate(args, out: Output) -> int:
    primary, secondary = Webservice(_workspace(args), args.name).regen_key(args.key)
    out.show({"primary": primary, "secondary": secondary})
    return 0


def cmd_endpoint_logs(args, out: Output) -> int:
    print(Webservice(_workspace(args), args.name).get_logs(args.deployment, args.lines))
    return 0


# The parser --------------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-o", "--output", choices=("table", "json"), default=argparse.SUPPRESS,
                        help="table (for people, the default) or json (for scripts)")
    common.add_argument("-w", "--workspace", default=argparse.SUPPRESS, help="default: .studio/config.json or login")
    common.add_argument("--url", default=argparse.SUPPRESS, help="the studio's URL (default: config or login)")
    root = argparse.ArgumentParser(prog="studio", description=__doc__, parents=[common],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = root.add_subparsers(dest="group", required=True, metavar="COMMAND")

    def group(name, help_text):
        sub = groups.add_parser(name, help=help_text, parents=[common]).add_subparsers(dest="action", required=True,
                                                                                         metavar="ACTION")
        return sub

    def action(sub, name, func, help_text):
        p = sub.add_parser(name, help=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    login = groups.add_parser("login", help="save the URL and an API token (0600)", parents=[common])
    login.add_argument("--token", help="default: STUDIO_TOKEN, else asked")
    login.set_defaults(func=cmd_login)

    ws = group("workspace", "workspaces you belong to")
    action(ws, "list", cmd_workspace_list, "list them")
    p = action(ws, "use", cmd_workspace_use, "make one the default")
    p.add_argument("name")

    ex = group("experiment", "experiments, and submitting runs")
    action(ex, "list", cmd_experiment_list, "list experiments")
    p = action(ex, "submit", cmd_experiment_submit, "submit a script (its folder is the snapshot)")
    p.add_argument("-e", "--experiment", required=True)
    p.add_argument("-c", "--compute-target", default="local")
    p.add_argument("-d", "--source-directory", default=".", help="the folder sent (default: the script's)")
    p.add_argument("--environment", help="NAME or NAME:VERSION")
    p.add_argument("--requirements", help="a pip requirements file (an environment is made for it)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="an environment variable (repeatable)")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.add_argument("--name", help="display name")
    p.add_argument("--max-duration", type=int, metavar="SECONDS")
    p.add_argument("--wait", action="store_true", help="stream the console; exit with the run's status")
    p.add_argument("script")
    p.add_argument("arguments", nargs=argparse.REMAINDER)

    run = group("run", "runs")
    p = action(run, "list", cmd_run_list, "list runs (newest first)")
    p.add_argument("-e", "--experiment")
    p.add_argument("--status")
    for name, func, help_text in (("show", cmd_run_show, "its details"), ("cancel", cmd_run_cancel, "cancel it"),
                                  ("metrics", cmd_run_metrics, "what it logged")):
        action(run, name, func, help_text).add_argument("run_id", type=int)
    p = action(run, "logs", cmd_run_logs, "its console")
    p.add_argument("run_id", type=int)
    p.add_argument("-f", "--follow", action="store_true", help="live, until it ends (exit code: its status)")
    p = action(run, "download", cmd_run_download, "files it stored (outputs/, logs/, images)")
    p.add_argument("run_id", type=int)
    p.add_argument("prefix", nargs="?", default="")
    p.add_argument("-O", "--output-dir", dest="output", default=".")

    env = group("environment", "environments")
    action(env, "list", cmd_environment_list, "the latest version of each")
    action(env, "show", cmd_environment_show, "one (NAME or NAME:VERSION)").add_argument("name")
    p = action(env, "create", cmd_environment_create, "a new version from a conda YAML or a requirements file")
    p.add_argument("name")
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--base-image")
    p = action(env, "build", cmd_environment_build, "build its image (cached by its definition)")
    p.add_argument("name")
    p.add_argument("--wait", action="store_true")

    compute = group("compute", "compute targets")
    action(compute, "list", cmd_compute_list, "list them")
    p = action(compute, "attach", cmd_compute_attach, "attach a Docker engine")
    p.add_argument("name")
    p.add_argument("--docker-url", default="unix:///var/run/docker.sock")
    p.add_argument("--queue")
    action(compute, "test", cmd_compute_test, "test the connection").add_argument("name")

    model = group("model", "the model registry")
    action(model, "list", cmd_model_list, "models").add_argument("--name", help="name contains")
    action(model, "show", cmd_model_show, "a version (name, name:3, name@alias)").add_argument("reference")
    p = action(model, "register", cmd_model_register, "upload a file or folder as the next version")
    p.add_argument("name")
    p.add_argument("path")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE")
    p.add_argument("--description")
    p = action(model, "download", cmd_model_download, "a version's files")
    p.add_argument("reference")
    p.add_argument("-O", "--output-dir", dest="output", default=".")
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty")
    p = action(model, "alias", cmd_model_alias, "point an alias at a version")
    p.add_argument("reference")
    p.add_argument("alias")

    endpoint = group("endpoint", "endpoints")
    action(endpoint, "list", cmd_endpoint_list, "list them")
    action(endpoint, "show", cmd_endpoint_show, "one, with its deployments").add_argument("name")
    p = action(endpoint, "create", cmd_endpoint_create, "from a JSON (or YAML) file: endpoint and deployments")
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--wait", action="store_true", help="until every deployment is Healthy (or one Failed)")
    p = action(endpoint, "invoke", cmd_endpoint_invoke, "score a request")
    p.add_argument("name")
    p.add_argument("-f", "--file", help="the request body (- for stdin)")
    p.add_argument("-d", "--data", help="the request body, inline")
    p.add_argument("--deployment", help="this deployment, not the traffic split")
    action(endpoint, "get-keys", cmd_endpoint_keys, "its keys").add_argument("name")
    p = action(endpoint, "regenerate-keys", cmd_endpoint_regenerate, "a new key (the old one fails at once)")
    p.add_argument("name")
    p.add_argument("--key", choices=("primary", "secondary"), default="primary")
    p = action(endpoint, "logs", cmd_endpoint_logs, "its instances' consoles")
    p.add_argument("name")
    p.add_argument("--deployment")
    p.add_argument("--lines", type=int, default=200)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for name, default in (("output", "table"), ("workspace", None), ("url", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.group == "login" and not args.url:
        print("studio login: --url is required (e.g. --url http://127.0.0.1:8000)", file=sys.stderr)
        return 2
    out = Output(args.output)
    try:
        return args.func(args, out)
    except UsageError as error:
        print(f"studio: {error}", file=sys.stderr)
        return 2
    except StudioError as error:
        print(f"studio: {error}", file=sys.stderr)
        return 4 if error.status == 0 else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
