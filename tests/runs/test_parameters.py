"""Parameters: read from the arguments at submission (form and API), set by the script with its run token (replacing
parsed values), shown on the run page, in the API, as sortable and filterable columns of the experiment's runs table
and on the compare page; the SDK's checks (its requests, through a real worker and web server, are in
test_parameters_e2e.py)."""

from __future__ import annotations

import html
import json
import re
import sys
from pathlib import Path

import pytest

from runs import parameters, tokens
from runs.models import Run, RunParameter, RunStatus
from runs.views import PAGE_SIZE
from studio.models import ApiToken
from tests.conftest import login, make_run, py_upload, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]

TABLE = "/w/lab/experiments/mnist/"
COMPARE = "/w/lab/experiments/mnist/compare/"
API_RUNS = "/api/v1/workspaces/lab/experiments/mnist/runs"


def start(run: Run) -> str:
    for status, before in ((RunStatus.PREPARING, RunStatus.QUEUED), (RunStatus.STARTING, RunStatus.PREPARING),
                           (RunStatus.RUNNING, RunStatus.STARTING)):
        assert run.transition(status, from_states=(before,))
    return tokens.issue(run)


def post_params(client, run: Run, token: str, body) -> object:
    return client.post(f"/api/v1/runs/{run.pk}/parameters", data=json.dumps(body), content_type="application/json",
                       headers={"Authorization": f"Bearer {token}"})


def api_token(user) -> dict:
    return {"Authorization": f"Token {ApiToken.issue(user, 'tests')[1]}"}


def shown_parameters(response) -> dict[str, tuple[str, str]]:
    """The run page's Parameters section: name -> (value as shown, source note)."""
    assert response.status_code == 200, response.content[:300]
    section = re.search(r'<section id="parameters".*?</section>', response.content.decode(), re.S).group(0)
    found = {}
    for name, value, note in re.findall(r"<tr><td><code>(.*?)</code></td><td[^>]*><code>(.*?)</code></td><td[^>]*>(.*?)</td></tr>",
                                        section, re.S):
        found[html.unescape(name)] = (html.unescape(value), note.strip())
    return found


def with_params(template: Run, params: dict | None = None, **fields) -> Run:
    """A cheap top-level run of the template's experiment, with parameters set as a script would."""
    defaults = {"workspace": template.workspace, "experiment": template.experiment, "snapshot": template.snapshot,
                "entry_script": "train.py", "compute_target": template.compute_target, "status": RunStatus.COMPLETED}
    run = Run.objects.create(**{**defaults, **fields})
    parameters.store(run, params or {})
    return run


def table_rows(response) -> list[tuple[int, list[str]]]:
    """(run id, parameter cells as shown) for each row of the runs table."""
    assert response.status_code == 200, response.content[:500]
    found = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", response.content.decode(), re.S):
        run_id = re.search(r'<span class="muted">#(\d+)</span>', row)
        if run_id:
            cells = [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
                     for cell in re.findall(r'<td class="param">(.*?)</td>', row, re.S)]
            found.append((int(run_id.group(1)), cells))
    return found


def param_headers(response) -> list[str]:
    heads = re.findall(r'<th class="param"[^>]*>(.*?)</th>', response.content.decode(), re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", head)).replace("▲", "").replace("▼", "").strip() for head in heads]


def next_link(response) -> str | None:
    match = re.search(r'<nav class="pager">.*?<a href="(\?[^"]*)">Next →</a>', response.content.decode(), re.S)
    return html.unescape(match.group(1)) if match else None


@pytest.fixture
def first(cast, workspace) -> Run:
    return make_run(workspace, cast["carol"], experiment="mnist", display_name="first")


# --- From the arguments ------------------------------------------------------------------------------------------------


def test_the_submitted_arguments_become_parameters_named_as_argparse_names_them(client, cast, workspace):
    login(client, cast["carol"])
    response = client.post("/w/lab/runs/new/", {
        "experiment": "mnist", "compute_target": "local", "source": py_upload("print(1)\n"),
        "arguments": "data.csv --epochs 20 --learning-rate=0.1 --fp16 --offset -1 --name 'two words' -- --after 1",
    })
    run = Run.objects.get()
    assert response.status_code == 302
    page = shown_parameters(client.get(f"/w/lab/runs/{run.pk}/"))
    assert page == {
        "epochs": ("20", "from the arguments"), "fp16": ("true", "from the arguments"),
        "learning_rate": ("0.1", "from the arguments"), "name": ("two words", "from the arguments"),
        "offset": ("-1", "from the arguments"),
    }


def test_the_api_submit_reads_them_too_and_the_run_detail_lists_them(client, cast, workspace):
    headers = api_token(cast["carol"])
    response = client.post("/api/v1/workspaces/lab/runs", {
        "experiment": "mnist", "compute_target": "local", "source": py_upload("print(1)\n"),
        "arguments": "--lr 0.01 --optimizer adam --lr 0.02"}, headers=headers)
    assert response.status_code == 201, response.content
    detail = client.get(f"/api/v1/workspaces/lab/runs/{response.json()['id']}", headers=headers).json()
    assert detail["parameters"] == {"lr": "0.02", "optimizer": "adam"}  # a repeated option keeps its last value


def test_options_that_could_not_be_parameters_are_left_out_and_the_arguments_kept(cast, workspace):
    long_value = "x" * (parameters.MAX_VALUE_CHARS + 1)
    arguments = ["--bad@name", "1", "--evil\u202ename", "2", "--long", long_value, "--", "--after", "3", "--ok", "4"]
    assert parameters.from_arguments(arguments) == {}
    run = make_run(workspace, cast["carol"], arguments=["--good", "1", *arguments])
    assert parameters.as_dict(run) == {"good": "1"} and run.arguments[-1] == "4"


# --- From the script ---------------------------------------------------------------------------------------------------


def test_a_script_sets_parameters_that_replace_parsed_ones(client, cast, workspace):
    run = make_run(workspace, cast["carol"], experiment="mnist", arguments=["--lr", "0.1", "--epochs", "5"])
    token = start(run)
    response = post_params(client, run, token, {"parameters": {"lr": 0.01, "optimizer": "adam", "fp16": True}})
    assert response.status_code == 200, response.content
    assert response.json() == {"parameters": {"epochs": "5", "fp16": True, "lr": 0.01, "optimizer": "adam"}}
    login(client, cast["bob"])
    assert shown_parameters(client.get(f"/w/lab/runs/{run.pk}/")) == {
        "epochs": ("5", "from the arguments"), "fp16": ("true", ""), "lr": ("0.01", ""), "optimizer": ("adam", ""),
    }
    detail = client.get(f"/api/v1/workspaces/lab/runs/{run.pk}", headers=api_token(cast["bob"])).json()
    assert detail["parameters"] == {"epochs": "5", "fp16": True, "lr": 0.01, "optimizer": "adam"}
    # Set again: the latest value wins.
    post_params(client, run, token, {"parameters": {"lr": 0.02}})
    assert RunParameter.objects.get(run=run, name="lr").value == 0.02


def test_a_child_run_takes_parameters_with_its_parents_token(client, cast, workspace):
    run = make_run(workspace, cast["carol"], experiment="mnist")
    token = start(run)
    child = run.create_child("lr=0.1")
    assert post_params(client, child, token, {"parameters": {"learning_rate": 0.1}}).status_code == 200
    assert parameters.as_dict(child) == {"learning_rate": 0.1} and parameters.as_dict(run) == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"parameters": {"evil\u202ename": 1}}, "U+202E"),
        ({"parameters": {"bad;name": 1}}, "Invalid parameter name"),
        ({"parameters": {" lr": 1}}, "no leading or trailing space"),
        ({"parameters": {"n" * 251: 1}}, "Invalid parameter name"),
        ({"parameters": {"lr": "v" * 6001}}, "6000"),
        ({"parameters": {"lr": "a\u202eb"}}, "U+202E"),
        ({"parameters": {"lr": "a\x00b"}}, "NUL"),
        ({"parameters": {"lr": [0.1, 0.2]}}, "parameters.lr"),
        ({"parameters": {"lr": {"a": 1}}}, "parameters.lr"),
        ({"parameters": {"lr": None}}, "parameters.lr"),
        ({"parameters": {"lr": 2**63}}, "too large"),
        ({"parameters": {f"p{i}": i for i in range(501)}}, "parameters"),
        ({"params": {"lr": 1}}, "parameters"),
    ],
)
def test_bad_parameters_get_a_clear_400_and_nothing_is_stored(client, cast, workspace, body, message):
    run = make_run(workspace, cast["carol"], experiment="mnist")
    response = post_params(client, run, start(run), body)
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]
    assert not RunParameter.objects.filter(run=run).exists()


def test_not_a_number_is_refused_as_json_refuses_it(client, cast, workspace):
    run = make_run(workspace, cast["carol"], experiment="mnist")
    response = client.post(f"/api/v1/runs/{run.pk}/parameters", data=b'{"parameters": {"lr": NaN}}',
                           content_type="application/json", headers={"Authorization": f"Bearer {start(run)}"})
    assert response.status_code == 400 and not RunParameter.objects.exists()


def test_the_bound_counts_what_the_run_already_holds(client, cast, workspace):
    run = make_run(workspace, cast["carol"], experiment="mnist")
    token = start(run)
    assert post_params(client, run, token, {"parameters": {f"p{i}": i for i in range(499)}}).status_code == 200
    assert post_params(client, run, token, {"parameters": {"p0": 7, "new": 1}}).status_code == 200  # one new: 500
    response = post_params(client, run, token, {"parameters": {"one_more": 1}})
    assert response.status_code == 400 and "at most 500 parameters" in response.json()["error"]


def test_an_ended_runs_token_sets_nothing(client, cast, workspace):
    run = make_run(workspace, cast["carol"], experiment="mnist")
    token = start(run)
    run.transition(RunStatus.COMPLETED, from_states=(RunStatus.RUNNING,))
    response = post_params(client, run, token, {"parameters": {"lr": 1}})
    assert response.status_code == 403 and "has ended" in response.json()["error"]


# --- The runs table ----------------------------------------------------------------------------------------------------


def test_parameter_columns_show_each_runs_value_and_a_dash_when_it_has_none(client, cast, first):
    a = with_params(first, {"lr": 0.01, "optimizer": "adam"})
    b = with_params(first, {"lr": "0.1"})
    login(client, cast["bob"])
    response = client.get(TABLE)
    assert param_headers(response) == ["lr", "optimizer"]
    assert table_rows(response) == [(b.pk, ["0.1", "–"]), (a.pk, ["0.01", "adam"]), (first.pk, ["–", "–"])]
    assert param_headers(client.get(TABLE, {"param": "optimizer"})) == ["optimizer"]
    assert param_headers(client.get(TABLE, {"param": ""})) == []


def test_sorting_by_a_parameter_puts_numbers_in_order_then_text_then_runs_without_it(client, cast, first):
    made = {value: with_params(first, {"lr": value}) for value in ["10", 2, 0.5, -1, "auto", "1e-3"]}
    login(client, cast["bob"])
    ascending = [run_id for run_id, _ in table_rows(client.get(TABLE, {"sort": "param:lr"}))]
    assert ascending == [made[v].pk for v in (-1, "1e-3", 0.5, 2, "10", "auto")] + [first.pk]
    descending = [run_id for run_id, _ in table_rows(client.get(TABLE, {"sort": "-param:lr"}))]
    assert descending == [made[v].pk for v in ("auto", "10", 2, 0.5, "1e-3", -1)] + [first.pk]


def test_sort_keys_order_numbers_by_value_and_put_text_after_them():
    numbers = [-1e300, -2.5, -1, -1e-300, -0.0, 0, 5e-324, 0.001, 1, 2, 10, 1e300]
    keys = [parameters.sort_key(parameters.display(n), float(n)) for n in numbers]
    assert keys == sorted(keys) and keys[4] == keys[5]  # -0.0 and 0 are the same number
    assert max(keys) < parameters.sort_key("0", None) < parameters.sort_key("adam", None)


def test_a_parameter_sort_pages_by_keyset_through_ties_and_missing_values(client, cast, first):
    runs = [with_params(first, {"depth": index % 7}) for index in range(PAGE_SIZE + 15)]
    # By value, ties by id (in the sort's direction), then the run without the parameter.
    expected = [run.pk for run in sorted(runs, key=lambda run: (parameters.as_dict(run)["depth"], run.pk))] + [first.pk]
    login(client, cast["bob"])
    seen, url = [], "?sort=param:depth"
    while url:
        response = client.get(TABLE + url)
        seen += [run_id for run_id, _ in table_rows(response)]
        url = next_link(response)
    assert seen == expected


def test_the_table_filters_by_a_parameters_value_or_range(client, cast, first):
    adam = with_params(first, {"optimizer": "adam", "lr": 0.1})
    sgd = with_params(first, {"optimizer": "sgd", "lr": "0.01"})
    big = with_params(first, {"optimizer": "adam", "lr": 3})
    login(client, cast["bob"])

    def shown(**query):
        return [run_id for run_id, _ in table_rows(client.get(TABLE, query))]

    assert shown(param_filter="optimizer=adam") == [big.pk, adam.pk]
    assert shown(param_filter="lr=0.10") == [adam.pk]  # the same number
    assert shown(param_filter="lr=0.01") == [sgd.pk]  # text that reads as that number
    assert shown(param_filter="lr:0.05:") == [big.pk, adam.pk]
    assert shown(param_filter=["lr::1", "optimizer=adam"]) == [adam.pk]
    assert shown(param_filter="lr:0:5", sort="param:lr") == [sgd.pk, adam.pk, big.pk]
    assert shown(param_filter="lr:-10:0.05") == [sgd.pk] and shown(param_filter="lr:4:") == []
    auto = with_params(first, {"optimizer": "auto", "lr": "auto"})
    assert shown(param_filter="lr=auto") == [auto.pk] and auto.pk not in shown(param_filter="lr:0:")
    page = client.get(TABLE, {"param_filter": "optimizer=adam"}).content.decode()
    assert 'name="param_filter" value="optimizer=adam"' in page
    assert "param_filter=optimizer%3Dadam" in page  # the sort links keep the filter


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"sort": "param:nothing"}, "No parameter named 'nothing' in this experiment (its parameters: lr)"),
        ({"param": "nothing"}, "No parameter named 'nothing'"),
        ({"param_filter": "nothing=1"}, "No parameter named 'nothing'"),
        ({"param_filter": "lr"}, "write name=value"),
        ({"param_filter": "lr:x:1"}, "write name=value"),
    ],
)
def test_a_bad_parameter_query_is_a_400_saying_what_to_change(client, cast, first, query, message):
    with_params(first, {"lr": 1})
    login(client, cast["bob"])
    response = client.get(TABLE, query)
    assert response.status_code == 400 and message in text(response)


def test_a_runs_children_show_the_same_parameter_columns(client, cast, first):
    parent = with_params(first, {"lr": 0.1})
    child = parent.create_child("fold")
    parameters.store(child, {"lr": 0.5})
    login(client, cast["bob"])
    page = client.get(TABLE).content.decode()
    expander = html.unescape(re.search(r'hx-get="([^"]*children_of=[^"]*)"', page).group(1))
    assert "param=lr" in expander
    assert table_rows(client.get(expander)) == [(child.pk, ["0.5"])]


def test_the_api_lists_runs_with_parameter_columns_sorted_and_filtered_by_one(client, cast, first):
    a = with_params(first, {"lr": 0.1, "optimizer": "adam"})
    b = with_params(first, {"lr": 0.01, "optimizer": "sgd"})
    with_params(first, {"lr": 5})
    headers = api_token(cast["bob"])
    body = client.get(API_RUNS, {"param": "lr", "sort": "-param:lr", "param_filter": "lr::1"}, headers=headers).json()
    assert [(item["id"], item["parameters"]) for item in body["items"]] == [(a.pk, {"lr": 0.1}), (b.pk, {"lr": 0.01})]
    body = client.get(API_RUNS, {"param": "optimizer", "param_filter": "optimizer=sgd"}, headers=headers).json()
    assert [(item["id"], item["parameters"]) for item in body["items"]] == [(b.pk, {"optimizer": "sgd"})]
    response = client.get(API_RUNS, {"sort": "param:nope"}, headers=headers)
    assert response.status_code == 400 and "No parameter named 'nope'" in response.json()["error"]


# --- The compare page --------------------------------------------------------------------------------------------------


def test_the_compare_page_lines_up_a_sweeps_children_by_their_logged_learning_rate(client, cast, workspace):
    from runs.metrics import append_points

    parent = make_run(workspace, cast["carol"], experiment="mnist", arguments=["--epochs", "5", "--sweep", "0.001,0.1"])
    start(parent)
    children = []
    for rate in (0.001, 0.1):
        child = parent.create_child(f"lr={rate}")
        parameters.store(child, {"learning_rate": rate, "epochs": 5})
        append_points(child, "accuracy", [(None, 0.5 + rate, 0.0)])
        children.append(child)
    login(client, cast["bob"])
    response = client.get(COMPARE, {"run": [str(child.pk) for child in children]})
    page = response.content.decode()
    differing = re.search(r'<tbody id="differing-settings">(.*?)</tbody>', page, re.S).group(1)
    assert ('<span class="muted">parameter</span> <code>learning_rate</code></th><td><code>0.001</code></td>'
            '<td><code>0.1</code></td>') in differing
    data = json.loads(re.search(r'<script id="compare-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    dimensions = {d["label"]: d["values"] for d in data["parcoords"]["dimensions"]}
    assert dimensions == {"epochs": [5.0, 5.0], "learning_rate": [0.001, 0.1], "accuracy": [0.501, 0.6]}
    assert "Parameters against final" in text(response)


# --- The SDK -----------------------------------------------------------------------------------------------------------


SDK = Path(__file__).resolve().parents[2] / "sdk"


@pytest.fixture
def offline_run(monkeypatch):
    if str(SDK) not in sys.path:
        monkeypatch.syspath_prepend(str(SDK))
    from studio_sdk.run import Run as SdkRun
    from studio_sdk.run import _OfflineBackend

    return SdkRun(_OfflineBackend())


def test_the_sdk_checks_parameters_where_they_are_logged(offline_run, capsys):
    import numpy as np

    offline_run.log_param("learning_rate", np.float64(0.01))
    offline_run.set_params({"epochs": 20, "optimizer": "adam", "fp16": True})
    assert offline_run.get_params() == {"learning_rate": 0.01, "epochs": 20, "optimizer": "adam", "fp16": True}
    assert "parameters: learning_rate=0.01" in capsys.readouterr().out
    with pytest.raises(TypeError, match="str\\(value\\) or json.dumps"):
        offline_run.log_param("layers", [1, 2])
    with pytest.raises(ValueError, match="finite"):
        offline_run.log_param("lr", float("nan"))
    with pytest.raises(ValueError, match="Invalid name"):
        offline_run.log_param("bad;name", 1)
    with pytest.raises(ValueError, match="6000"):
        offline_run.log_param("long", "x" * 6001)
