"""The in-run SDK (`sdk/studio_sdk`) against a fake studio: a real HTTP server in a thread (tests/sdk/fake_studio.py).

In-process tests use Run.get_context() with the studio's environment variables; what happens at exit or on an
uncaught exception is tested in a subprocess, the way the runner starts a script.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.sdk.fake_studio import TOKEN, FakeStudio, unpack

SDK = Path(__file__).resolve().parents[2] / "sdk"
if str(SDK) not in sys.path:
    sys.path.insert(0, str(SDK))

from studio_sdk import Run  # noqa: E402

# A 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005000201"
    "a2f5c9d40000000049454e44ae426082"
)


@pytest.fixture
def studio():
    with FakeStudio() as fake:
        yield fake


@pytest.fixture
def context(monkeypatch):
    """Run.get_context() reads the environment afresh; the process hooks are only tested in subprocesses."""
    monkeypatch.setattr(Run, "_context", None)
    monkeypatch.setattr(Run, "_hooks_installed", True)
    for name in ("STUDIO_RUN_ID", "STUDIO_API_URL", "STUDIO_RUN_TOKEN", "STUDIO_SDK_GIVE_UP_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    run = Run._context
    if run is not None and not run.offline:
        run._backend.sender.close(timeout=5)


@pytest.fixture
def run(studio, context):
    for name, value in studio.env(run_id=7, STUDIO_SDK_GIVE_UP_SECONDS="3").items():
        context.setenv(name, value)
    return Run.get_context()


def run_script(tmp_path, source: str, env: dict, timeout: float = 20) -> subprocess.CompletedProcess:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(source))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    full_env.update(PYTHONPATH=str(SDK), PYTHONUNBUFFERED="1", **env)
    return subprocess.run(
        [sys.executable, str(script)], env=full_env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The context -------------------------------------------------------------------------------------------------------
def test_get_context_returns_the_same_online_run_inside_the_studio(run):
    assert Run.get_context() is run
    assert not run.offline
    assert run.id == 7


def test_get_context_is_offline_without_the_studio_variables_and_prints_what_it_is_given(context, capsys):
    run = Run.get_context()
    run.log("loss", 0.5, step=3)
    run.log("acc", 0.25)
    run.log_list("per-class", [1, 2.5])
    run.tag("model", "resnet")
    run.child_run("fold-1").log("loss", 1.5)
    run.complete()

    assert Run.get_context() is run
    assert run.offline and run.id is None
    assert run.flush() is True
    assert capsys.readouterr().out.splitlines() == [
        "[studio offline] loss=0.5 (step 3)",
        "[studio offline] acc=0.25",
        "[studio offline] per-class=[1, 2.5]",
        "[studio offline] tags: model=resnet",
        "[studio offline] child run fold-1",
        "[studio offline fold-1] loss=1.5",
        "[studio offline] run completed",
    ]


def test_a_partial_studio_environment_logs_offline_with_a_warning(context, capsys):
    context.setenv("STUDIO_RUN_ID", "7")
    run = Run.get_context()
    assert run.offline
    assert "STUDIO_API_URL and STUDIO_RUN_TOKEN not set" in capsys.readouterr().err


# Scalars -----------------------------------------------------------------------------------------------------------
def test_a_hundred_thousand_points_arrive_in_few_requests_in_order(run, studio):
    started = time.perf_counter()
    for i in range(100_000):
        run.log("loss", i * 0.5, step=i)
    assert run.flush(timeout=20)
    elapsed = time.perf_counter() - started
    print(f"\n100,000 log calls + flush: {elapsed:.3f} s")

    requests = studio.received("metrics", 7)
    assert 2 <= len(requests) <= 10
    assert all(r.json["series"][0]["count"] <= 50_000 for r in requests)
    points = studio.points(7)
    assert [(name, step, value) for name, step, value, _ in points] == [("loss", i, i * 0.5) for i in range(100_000)]
    times = [at for *_, at in points]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 30
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in requests)
    assert elapsed < 5


def test_points_without_a_step_are_sent_as_the_next_step_with_a_description_and_their_time(run, studio):
    before = time.time()
    run.log("loss", 3, description="Training loss")
    run.log("loss", 2.5)
    run.flush()

    [request] = studio.received("metrics", 7)
    [series] = request.json["series"]
    assert series["name"] == "loss" and series["description"] == "Training loss" and series["count"] == 2
    points = unpack(series)
    assert [p[:2] for p in points] == [(None, 3.0), (None, 2.5)]
    assert all(before <= p[2] <= time.time() for p in points)
    assert request.headers["Content-Type"] == "application/json"


def test_a_single_point_is_sent_within_about_half_a_second_without_flush(run, studio):
    run.log("loss", 1.0)
    deadline = time.monotonic() + 3
    while not studio.points(7) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert studio.points(7)[0][:3] == ("loss", None, 1.0)


def test_nan_and_infinities_travel_packed_and_as_strings_in_entries(run, studio):
    run.log("loss", float("nan"))
    run.log("loss", float("inf"))
    run.log("loss", -math.inf)
    run.log_list("values", [1.0, float("nan")])
    run.log_row("row", x=float("inf"))
    run.flush()

    values = [p[2] for p in studio.points(7)]
    assert math.isnan(values[0]) and values[1:] == [math.inf, -math.inf]
    [entries] = studio.received("entries", 7)
    assert [e["data"] for e in entries.json["entries"]] == [[1.0, "NaN"], {"x": "Infinity"}]


def test_numpy_scalars_are_logged_as_floats(run, studio):
    np = pytest.importorskip("numpy")
    run.log("loss", np.float32(0.5), step=np.int64(2))
    run.log("count", np.int64(3))
    run.flush()
    assert [p[:3] for p in studio.points(7)] == [("loss", 2, 0.5), ("count", None, 3.0)]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("", 1.0), {}, ValueError, "Invalid name"),
        (("x" * 256, 1.0), {}, ValueError, "Invalid name"),
        (("loss!", 1.0), {}, ValueError, "Invalid name"),
        ((" loss", 1.0), {}, ValueError, "no leading or trailing space"),
        ((3, 1.0), {}, TypeError, "name must be a string"),
        (("loss", True), {}, TypeError, "not a bool"),
        (("loss", "0.5"), {}, TypeError, "must be a number"),
        (("loss", None), {}, TypeError, "must be a number"),
        (("loss", [1.0, 2.0]), {}, TypeError, "must be a number"),
        (("loss", 10**400), {}, ValueError, "too large"),
        (("loss", 1.0), {"step": 1.5}, TypeError, "step must be an integer"),
        (("loss", 1.0), {"step": -1}, ValueError, "step must be 0 or more"),
        (("loss", 1.0), {"description": "d" * 1025}, ValueError, "keep it to 1024"),
    ],
)
def test_invalid_names_and_values_raise_in_the_caller(run, studio, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        run.log(*args, **kwargs)
    run.flush()
    assert studio.points(7) == []


def test_names_may_use_letters_digits_and_the_allowed_punctuation(run, studio):
    run.log("train/loss: epoch-1 v2.0_a", 1.0)
    run.flush()
    assert studio.points(7)[0][0] == "train/loss: epoch-1 v2.0_a"


def test_a_batch_larger_than_the_body_limit_is_split(run, studio):
    description = "d" * 1024
    for i in range(10_000):
        run.log(f"series-{i}", float(i), description=description)
    run.flush()
    requests = studio.received("metrics", 7)
    assert len(requests) >= 2
    assert all(len(r.body) <= 8_000_000 for r in requests)
    assert sorted(p[2] for p in studio.points(7)) == [float(i) for i in range(10_000)]


# Lists, rows, tables, tags -----------------------------------------------------------------------------------------
def test_lists_rows_and_tables_are_sent_as_entries(run, studio):
    run.log_list("per-class", [0.5, 1, 2])
    run.log_row("epochs", epoch=1, loss=0.25, note="warm-up")
    run.log_table("confusion", {"label": ["cat", "dog"], "count": [3, 4]})
    run.flush()

    entries = [e for r in studio.received("entries", 7) for e in r.json["entries"]]
    assert entries == [
        {"name": "per-class", "kind": "list", "data": [0.5, 1.0, 2.0]},
        {"name": "epochs", "kind": "row", "data": {"epoch": 1.0, "loss": 0.25, "note": "warm-up"}},
        {"name": "confusion", "kind": "table", "data": {"label": ["cat", "dog"], "count": [3.0, 4.0]}},
    ]


def test_tables_need_columns_of_the_same_length(run):
    with pytest.raises(ValueError, match="same length"):
        run.log_table("t", {"a": [1, 2], "b": [1]})
    with pytest.raises(TypeError, match="must be a number"):
        run.log_list("l", [1, "x"])
    with pytest.raises(ValueError, match="at least one column"):
        run.log_row("r")


def test_tags_are_sent_and_read_back_merged_with_pending_ones(run, studio):
    studio.tags[7] = {"from-server": "yes"}
    run.set_tags({"model": "resnet", "lr": 0.1})
    run.tag("baseline")
    assert run.get_tags() == {"from-server": "yes", "model": "resnet", "lr": "0.1", "baseline": None}

    run.flush()
    sent = {}
    for request in studio.received("tags", 7):
        sent.update(request.json["tags"])
    assert sent == {"model": "resnet", "lr": "0.1", "baseline": None}
    with pytest.raises(TypeError, match="string, a number or None"):
        run.tag("bad", ["list"])


# Retries and errors ------------------------------------------------------------------------------------------------
def test_a_failing_studio_is_retried_with_backoff_without_losing_points(run, studio):
    studio.fail_next(3, status=503)
    started = time.monotonic()
    for i in range(10):
        run.log("loss", float(i))
    assert run.flush(timeout=10)

    assert [p[2] for p in studio.points(7)] == [float(i) for i in range(10)]
    assert studio.attempts == 4
    assert time.monotonic() - started >= 0.2 + 0.4 + 0.8


def test_a_429_and_closed_connections_are_retried_too(run, studio):
    studio.fail_next(1, status=429)
    studio.drop_next(2)
    run.log("loss", 1.0)
    assert run.flush(timeout=10)
    assert [p[2] for p in studio.points(7)] == [1.0]


def test_a_4xx_is_reported_once_to_stderr_and_the_batch_dropped(run, studio, capsys):
    studio.refuse_next(400, "'loss' was logged as a table; use another name.")
    run.log("loss", 1.0)
    run.flush()
    studio.refuse_next(400, "'loss' was logged as a table; use another name.")
    run.log("loss", 2.0)
    run.flush()
    run.log("loss", 3.0)
    run.flush()

    err = capsys.readouterr().err
    assert err.count("HTTP 400: 'loss' was logged as a table; use another name.") == 1
    assert [p[2] for p in studio.points(7)] == [3.0]


# Children, images, files, status -----------------------------------------------------------------------------------
def test_child_runs_get_their_ids_from_the_studio_and_log_to_their_own_url(run, studio):
    run.log("loss", 1.0)
    fold = run.child_run("fold-1")
    fold.log("loss", 2.0)
    trial = fold.child_run()
    trial.log("loss", 3.0)
    run.flush()

    assert (fold.id, fold.name, fold.parent) == (1000, "fold-1", run)
    assert trial.id == 1001 and trial.parent is fold
    children = studio.received("children")
    assert [(r.run_id, r.json) for r in children] == [(7, {"name": "fold-1"}), (1000, {"name": None})]
    assert [p[2] for p in studio.points(7)] == [1.0]
    assert [p[2] for p in studio.points(1000)] == [2.0]
    assert [p[2] for p in studio.points(1001)] == [3.0]
    # the parent's points were sent before the child was created
    assert studio.requests.index(studio.received("metrics", 7)[0]) < studio.requests.index(children[0])


def test_a_child_run_used_as_a_context_manager_completes_or_fails(run, studio):
    with run.child_run("ok") as ok:
        ok.log("x", 1.0)
    with pytest.raises(RuntimeError), run.child_run("bad"):
        raise RuntimeError("diverged")

    statuses = [(r.run_id, r.json) for r in studio.received("status")]
    assert statuses == [
        (1000, {"status": "Completed", "reason": ""}),
        (1001, {"status": "Failed", "reason": "RuntimeError: diverged"}),
    ]


def test_a_child_run_is_offline_when_the_studio_refuses_it(run, studio, capsys):
    studio.refuse_next(403, "This token cannot create runs.")
    child = run.child_run("fold-1")
    assert child.offline
    child.log("loss", 1.0)
    captured = capsys.readouterr()
    assert "HTTP 403: This token cannot create runs." in captured.err
    assert "[studio offline fold-1] loss=1" in captured.out


def test_complete_and_fail_send_the_status_after_everything_logged_before(run, studio):
    run.log("loss", 1.0)
    run.complete()
    assert studio.requests[-1].endpoint == "status"
    assert studio.requests[-1].json == {"status": "Completed", "reason": ""}
    assert studio.points(7)

    run.fail("diverged")
    assert studio.requests[-1].json == {"status": "Failed", "reason": "diverged"}


def test_log_image_sends_a_png_file(run, studio, tmp_path):
    (tmp_path / "roc.png").write_bytes(PNG)
    run.log_image("roc", path=tmp_path / "roc.png")
    run.flush()

    [request] = studio.received("images", 7)
    assert request.form["name"] == "roc"
    assert request.form["file"] == ("roc.png", "image/png", PNG)
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_log_image_renders_a_figure_to_png_in_memory(run, studio):
    class Figure:
        def savefig(self, buffer, format):
            assert format == "png"
            buffer.write(PNG)

    run.log_image("loss curve", plot=Figure())
    run.flush()
    [request] = studio.received("images", 7)
    assert request.form["name"] == "loss curve"
    assert request.form["file"] == ("figure.png", "image/png", PNG)


def test_log_image_renders_a_matplotlib_figure(run, studio):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure = pyplot.figure()
    pyplot.plot([1, 2, 3])
    run.log_image("plot", plot=figure)
    run.flush()
    [request] = studio.received("images", 7)
    assert request.form["file"][2].startswith(b"\x89PNG")


def test_log_image_refuses_other_files_and_ambiguous_calls(run, tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"\.png, \.jpg, \.jpeg or \.svg"):
        run.log_image("data", path=tmp_path / "data.csv")
    with pytest.raises(TypeError, match="either path= .* or plot="):
        run.log_image("nothing")
    with pytest.raises(TypeError, match="matplotlib figure"):
        run.log_image("plot", plot=object())


def test_upload_file_sends_a_path_or_a_stream_under_outputs(run, studio, tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\x00\x01")
    run.upload_file("model/weights.bin", tmp_path / "weights.bin")
    run.upload_file("notes.txt", io.StringIO("hello"))
    run.upload_file("raw.bin", io.BytesIO(b"raw"))
    run.flush()

    forms = [r.form for r in studio.received("files", 7)]
    assert [f["name"] for f in forms] == ["model/weights.bin", "notes.txt", "raw.bin"]
    assert [f["file"][2] for f in forms] == [b"\x00\x01", b"hello", b"raw"]
    assert forms[1]["file"][:2] == ("notes.txt", "text/plain")


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../up.txt", "a/../../b"])
def test_upload_file_refuses_names_outside_the_outputs(run, name):
    with pytest.raises(ValueError, match="relative path"):
        run.upload_file(name, io.BytesIO(b"x"))


def test_records_of_one_run_reach_the_studio_in_the_order_logged(run, studio):
    run.log("loss", 1.0)
    run.tag("phase", "one")
    run.log_image("img", plot=type("F", (), {"savefig": lambda self, b, format: b.write(PNG)})())
    run.log("loss", 2.0)
    run.complete()
    assert [r.endpoint for r in studio.requests] == ["metrics", "tags", "images", "metrics", "status"]


# In a script -------------------------------------------------------------------------------------------------------
def test_a_script_that_exits_without_flush_still_sends_everything(studio, tmp_path):
    result = run_script(
        tmp_path,
        """
        from studio_sdk import Run
        run = Run.get_context()
        for i in range(20_000):
            run.log("loss", i / 2, step=i)
        run.tag("done")
        """,
        studio.env(run_id=7),
    )
    assert result.returncode == 0, result.stderr
    assert [(p[1], p[2]) for p in studio.points(7)] == [(i, i / 2) for i in range(20_000)]
    assert studio.tags[7] == {"done": None}


def test_an_uncaught_exception_flushes_and_still_prints_the_traceback(studio, tmp_path):
    result = run_script(
        tmp_path,
        """
        import threading
        from studio_sdk import Run
        run = Run.get_context()
        def worker():
            run.log("from-thread", 1.0)
            raise KeyError("in a thread")
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        for i in range(100):
            run.log("loss", float(i))
        raise RuntimeError("diverged")
        """,
        studio.env(run_id=7),
    )
    assert result.returncode == 1
    assert "RuntimeError: diverged" in result.stderr and "Traceback" in result.stderr
    assert "KeyError: 'in a thread'" in result.stderr
    points = studio.points(7)
    assert points[0][:3] == ("from-thread", None, 1.0)
    assert [p[2] for p in points[1:]] == [float(i) for i in range(100)]


def test_a_script_exits_normally_when_the_studio_is_unreachable(tmp_path):
    env = {
        "STUDIO_RUN_ID": "7",
        "STUDIO_API_URL": f"http://127.0.0.1:{free_port()}",
        "STUDIO_RUN_TOKEN": TOKEN,
        "STUDIO_SDK_GIVE_UP_SECONDS": "1",
    }
    started = time.monotonic()
    result = run_script(
        tmp_path,
        """
        from studio_sdk import Run
        run = Run.get_context()
        for i in range(12_000):
            run.log("loss", float(i))
        run.tag("x", "y")
        child = run.child_run("fold")
        child.log("loss", 1.0)
        print(run.get_tags())
        run.complete()
        print("finished")
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 12
    assert "finished" in result.stdout
    assert "could not reach the studio" in result.stderr
    assert "[studio offline fold] loss=1" in result.stdout
    assert "{'x': 'y'}" in result.stdout


def test_studio_sdk_imports_only_the_standard_library(tmp_path):
    probe = textwrap.dedent(
        """
        import json, sys
        before = set(sys.modules)
        import studio_sdk
        from studio_sdk import Run
        new = sorted(set(sys.modules) - before)
        print(json.dumps(new))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["PYTHONPATH"] = str(SDK)
    output = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    new = json.loads(output)
    top_level = {name.split(".")[0] for name in new}
    assert "studio_sdk" in top_level
    assert top_level - {"studio_sdk"} <= set(sys.stdlib_module_names), top_level - set(sys.stdlib_module_names)
    assert not top_level & {"django", "matplotlib", "numpy"}


def test_the_sdk_package_declares_no_dependencies():
    pyproject = (SDK / "pyproject.toml").read_text()
    assert 'name = "studio-sdk"' in pyproject
    assert "dependencies = []" in pyproject
    assert 'requires-python = ">=3.9"' in pyproject
