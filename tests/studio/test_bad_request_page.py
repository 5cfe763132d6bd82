"""A bad query string gets a 400 that says what was wrong."""

import pytest

from tests.conftest import login, text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("data_dir")]


def test_a_bad_query_value_is_explained_on_the_page(client, cast, workspace):
    login(client, cast["bob"])
    response = client.get("/w/lab/experiments/?archived=maybe", headers={"Accept": "text/html"})
    assert response.status_code == 400
    page = text(response)
    assert 'id="bad-request-message"' in page and "archived" in page and "maybe" in page


def test_an_htmx_request_gets_the_message_as_text(client, cast, workspace):
    login(client, cast["bob"])
    response = client.get("/w/lab/experiments/?archived=maybe", headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain") and "archived" in response.content.decode()
