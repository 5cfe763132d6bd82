"""A failed build's stored error: a certificate failure says which setting fixes it (no Docker needed)."""

from __future__ import annotations

import pytest

from environments import builds

PIP_SSL = [
    "Step 5/9 : RUN pip install -r requirements.txt",
    "WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by "
    "'SSLError(SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get "
    "local issuer certificate (_ssl.c:1006)'))': /simple/six/",
    "ERROR: Could not find a version that satisfies the requirement six==1.16.0 (from versions: none)",
]


def test_a_certificate_failure_names_the_setting_first(settings):
    settings.STUDIO_BUILD_CA_BUNDLE = ""
    text = builds.failure_text(builds.BuildError("The command '/bin/sh -c pip install' returned a non-zero code: 1"),
                               PIP_SSL)
    first = text.splitlines()[0]
    assert "STUDIO_BUILD_CA_BUNDLE" in first and "certificate could not be verified" in first
    assert "returned a non-zero code: 1" in text and "CERTIFICATE_VERIFY_FAILED" in text


def test_with_a_bundle_set_it_says_to_check_that_file(settings):
    settings.STUDIO_BUILD_CA_BUNDLE = "/etc/ssl/private/proxy.pem"
    hint = builds.certificate_hint("pip: SSL: CERTIFICATE_VERIFY_FAILED")
    assert "STUDIO_BUILD_CA_BUNDLE is set (/etc/ssl/private/proxy.pem)" in hint


@pytest.mark.parametrize("lines", [["Step 5/9 : RUN pip install", "ERROR: No matching distribution found for nope==1"], []])
def test_other_failures_get_no_hint(settings, lines):
    settings.STUDIO_BUILD_CA_BUNDLE = ""
    text = builds.failure_text("returned a non-zero code: 1", lines)
    assert "STUDIO_BUILD_CA_BUNDLE" not in text and text.startswith("returned a non-zero code: 1")
    assert builds.certificate_hint(text) == ""


def test_the_stored_error_stays_within_its_limit(settings):
    settings.STUDIO_BUILD_CA_BUNDLE = ""
    text = builds.failure_text("x" * 30_000, PIP_SSL)
    assert len(text) == 20_000 and text.startswith("A certificate could not be verified")


def test_the_build_logs_polling_fallback_cuts_an_enormous_line(settings, tmp_path):
    from studio import console

    log = tmp_path / "build.log"
    log.write_bytes(b"Step 1/2 : FROM x\n" + b"#" * 10_000_000 + b"\nStep 2/2 : RUN y\n")
    lines, offset = console.chunk(log, 0)
    while True:
        more, following = console.chunk(log, offset)
        if following == offset:
            break
        lines, offset = lines + more, following
    limit = settings.STUDIO_LOG_LIVE_LINE_BYTES
    assert lines == ["Step 1/2 : FROM x", "#" * limit + console.TRUNCATED_NOTE, "Step 2/2 : RUN y"]
