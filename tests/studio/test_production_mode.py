"""With STUDIO_MODE=production (and a secret key), the studio's own settings serve every page: the static files are
collected with hashed names, pages link those, and they are served compressed with long cache headers.

The settings are module-level, so this runs in a child process of its own with the production environment, as the
start command would: migrate, collectstatic, then pages rendered through Django's test client over HTTPS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

SCRIPT = textwrap.dedent(
    """
    import json, django
    django.setup()
    from django.core.management import call_command
    call_command("migrate", "--noinput", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client
    from runs import snapshots
    from runs.submission import submit_run
    from studio.models import Workspace
    from django.db import transaction

    user = get_user_model().objects.create_user("ada", password="a long production password")
    workspace = Workspace.create_with_owner("prod", user)
    staged = snapshots.stage_upload(SimpleUploadedFile("train.py", b"print(1)\\n"))
    with transaction.atomic():
        run = submit_run(workspace, user, experiment_name="exp", staged=staged, entry_script="train.py",
                         compute_target=workspace.compute_targets.get(name="local"))
    client = Client()
    result = {}
    sign_in = client.get("/accounts/login/", secure=True)
    result["sign_in"] = [sign_in.status_code, sign_in.content.decode()]
    result["plain_http"] = client.get("/accounts/login/").status_code
    css = next(p for p in sign_in.content.decode().split('"') if p.startswith("/static/studio/studio."))
    asset = client.get(css, secure=True, headers={"Accept-Encoding": "gzip"})
    result["asset"] = [asset.status_code, asset.get("Cache-Control", ""), asset.get("Content-Encoding", "")]
    client.force_login(user)
    pages = {"run": f"/w/prod/runs/{run.pk}/", "dashboard": "/w/prod/", "experiments": "/w/prod/experiments/",
             "environments": "/w/prod/environments/", "compute": "/w/prod/compute/", "submit": "/w/prod/runs/new/",
             "metrics": f"/w/prod/runs/{run.pk}/metrics/", "docs": "/api/v1/docs", "missing": "/w/prod/runs/999/"}
    for name, url in pages.items():
        response = client.get(url, secure=True)
        result[name] = [response.status_code, response.content.decode()]
    print("RESULT" + json.dumps(result))
    """
)


def test_pages_render_with_production_settings_and_hashed_static_files(tmp_path):
    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "DATABASE_URL"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "studio.settings",
        "STUDIO_MODE": "production",
        "STUDIO_SECRET_KEY": "production-secret-key-for-this-test-only-" + "x" * 20,
        "STUDIO_DATA_DIR": str(tmp_path / "data"),
        "STUDIO_STATIC_ROOT": str(tmp_path / "static"),
        "STUDIO_REDIS_URL": settings.STUDIO_REDIS_URL,
        "STUDIO_ALLOWED_HOSTS": "testserver",
    })
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1])

    status, page = result["sign_in"]
    assert status == 200 and "Sign in" in page
    css = next(part for part in page.split('"') if part.startswith("/static/studio/studio.") and part.endswith(".css"))
    assert css != "/static/studio/studio.css", "the page links the hashed name"
    assert result["plain_http"] == 301, "production redirects plain HTTP to HTTPS"
    for name in ("run", "dashboard", "experiments", "environments", "compute", "submit", "metrics", "docs"):
        assert result[name][0] == 200, (name, result[name][1][-500:])
    run_page = result["run"][1]
    assert "/static/plotly/plotly.min." in run_page and "/static/plotly/plotly.min.js" not in run_page
    assert result["missing"][0] == 404 and "Not found" in result["missing"][1]

    assert result["asset"][0] == 200
    assert "max-age=315360000" in result["asset"][1] and "immutable" in result["asset"][1]
    assert result["asset"][2] == "gzip"

    collected = tmp_path / "static"
    hashed = collected / css.removeprefix("/static/")
    assert hashed.is_file() and hashed.with_name(hashed.name + ".gz").is_file()
    assert (collected / "staticfiles.json").is_file()
