"""Endpoints from a script, as Azure ML's v1 `Webservice`:

    service = Webservice(ws, "digits")
    service.run(json.dumps({"data": [[...]]}))      # through the gateway, with the endpoint's key
    service.get_keys(); service.regen_key("Primary"); service.get_logs()
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from studio_sdk._api import StudioError, quote


class Webservice:
    def __init__(self, workspace, name: str, data: dict | None = None):
        self.workspace = workspace
        self.name = name
        self.details = data or workspace.api.get(workspace.path(f"/endpoints/{quote(name)}"))
        self._keys: dict | None = None

    def _path(self, rest: str = "") -> str:
        return self.workspace.path(f"/endpoints/{quote(self.name)}{rest}")

    @property
    def scoring_uri(self) -> str:
        return self.details["scoring_url"]

    @property
    def swagger_uri(self) -> str:
        return self.details["swagger_url"]

    @property
    def state(self) -> str:
        return self.details["state"]

    def refresh(self) -> dict:
        self.details = self.workspace.api.get(self._path())
        return self.details

    @staticmethod
    def list(workspace) -> list[Webservice]:
        return [Webservice(workspace, item["name"], item)
                for item in workspace.api.get(workspace.path("/endpoints"))["endpoints"]]

    @staticmethod
    def create(workspace, name: str, description: str = "") -> Webservice:
        data = workspace.api.post(workspace.path("/endpoints"), {"name": name, "description": description})
        return Webservice(workspace, data["name"], data)

    def deploy(self, name: str, model: str, scoring_script: str | None = None, environment: str | None = None,
               compute_target: str = "local", traffic: int = 0, **settings) -> dict:
        """A deployment of `model` (name:version or name@alias) with the scoring script at the path given."""
        payload = {"name": name, "model": model, "compute_target": compute_target, "traffic": traffic, **settings}
        if scoring_script:
            with open(scoring_script, encoding="utf-8") as handle:
                payload["scoring_script"] = handle.read()
            payload["scoring_script_name"] = scoring_script.replace("\\", "/").rsplit("/", 1)[-1]
        if environment:
            payload["environment"] = environment
        return self.workspace.api.post(self._path("/deployments"), payload)

    def wait_for_deployment(self, show_output: bool = False, timeout: float = 1800) -> dict:
        import sys
        import time

        deadline = time.monotonic() + timeout
        shown = ""
        while True:
            data = self.refresh()
            states = {d["name"]: (d["state"], d["reason"]) for d in data["deployments"]}
            line = "; ".join(f"{n}: {s}" + (f" ({r.splitlines()[0]})" if r else "") for n, (s, r) in states.items())
            if show_output and line != shown:
                print(line, file=sys.stderr, flush=True)
                shown = line
            if any(s == "Failed" for s, _ in states.values()):
                failed = [r for s, r in states.values() if s == "Failed"]
                raise StudioError(f"The deployment failed: {failed[0]}")
            if states and all(s == "Healthy" for s, _ in states.values()):
                return data
            if time.monotonic() > deadline:
                raise StudioError(f"Not healthy after {timeout:.0f} s: {line}")
            time.sleep(1)

    def get_keys(self) -> tuple[str, str]:
        keys = self.workspace.api.get(self._path("/keys"))
        self._keys = keys
        return keys["primary"], keys["secondary"]

    def regen_key(self, key: str) -> tuple[str, str]:
        keys = self.workspace.api.post(self._path("/keys/regenerate"), {"key": key.lower()})
        self._keys = keys
        return keys["primary"], keys["secondary"]

    def update_traffic(self, traffic: dict | None = None, mirror: dict | None = None) -> dict:
        self.details = self.workspace.api.put(self._path("/traffic"), {"traffic": traffic, "mirror": mirror})
        return self.details

    def run(self, input_data, deployment: str | None = None, timeout: float = 60):
        """Score `input_data` (a JSON string, bytes, or anything JSON-serialisable); the answer, parsed when JSON."""
        if self._keys is None:
            self.get_keys()
        if isinstance(input_data, bytes):
            body = input_data
        elif isinstance(input_data, str):
            body = input_data.encode()
        else:
            body = json.dumps(input_data).encode()
        request = urllib.request.Request(self.scoring_uri, data=body, method="POST")
        request.add_header("Authorization", f"Bearer {self._keys['primary']}")
        request.add_header("Content-Type", "application/json")
        if deployment:
            request.add_header("azureml-model-deployment", deployment)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                content = response.read()
        except urllib.error.HTTPError as error:
            with error:
                content = error.read()
                try:
                    message = json.loads(content).get("message") or content.decode("utf-8", "replace")
                except (ValueError, AttributeError):
                    message = content[:500].decode("utf-8", "replace")
                raise StudioError(f"Scoring answered {error.code}: {message}", error.code) from None
        except OSError as error:
            raise StudioError(f"Could not reach the scoring URL {self.scoring_uri}: {error}") from None
        try:
            return json.loads(content)
        except ValueError:
            return content.decode("utf-8", "replace")

    def get_logs(self, deployment: str | None = None, num_lines: int = 200) -> str:
        """The end of each instance's console (what init() and run() printed, tracebacks included)."""
        parts = []
        for item in self.refresh()["deployments"]:
            if deployment and item["name"] != deployment:
                continue
            for instance in item["instances"]:
                data = self.workspace.api.get(self._path(f"/deployments/{quote(item['name'])}/instances/"
                                                         f"{instance['id']}/logs"), lines=num_lines)
                parts.append(f"== {item['name']} {data['instance']} ==\n" + "\n".join(data["lines"]))
        return "\n".join(parts)

    def delete(self) -> None:
        self.workspace.api.delete(self._path())

    def __repr__(self) -> str:
        return f"Webservice(name={self.name!r}, state={self.details.get('state')!r})"
