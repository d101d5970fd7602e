"""`make audit` verdicts on canned pip-audit reports: fail on a fixable vulnerability, warn (never
fail) when the vulnerability service is out of reach or knows none of the installed versions."""

from __future__ import annotations

import pytest

from tests.security.audit_deps import verdict


def dep(name: str, version: str, *vulns: dict, skip: str | None = None) -> dict:
    if skip:
        return {"name": name, "skip_reason": skip}
    return {"name": name, "version": version, "vulns": list(vulns)}


def vuln(ident: str, *fixes: str) -> dict:
    return {"id": ident, "fix_versions": list(fixes), "aliases": ["CVE-2099-0001"]}


def test_a_fixable_vulnerability_fails_and_names_the_fix():
    report = {
        "dependencies": [dep("jinja2", "3.1.4", vuln("GHSA-xxxx", "3.1.5")), dep("rich", "15")]
    }
    result = verdict(report, "")
    assert result.status == 1
    assert result.errors == ["jinja2 3.1.4: GHSA-xxxx, CVE-2099-0001; fixed in 3.1.5"]


def test_a_vulnerability_without_a_fix_warns():
    result = verdict({"dependencies": [dep("x", "1", vuln("PYSEC-1"))]}, "")
    assert result.status == 0 and "no fixed version yet" in result.warnings[0]


def test_clean_report_passes_and_lists_what_was_not_audited():
    report = {
        "dependencies": [
            dep("numpy", "2.4.6"),
            dep("torch", "", skip="Dependency not found on PyPI: torch (2.13.0+cpu)"),
            dep("dualscreen", "", skip="distribution marked as editable"),
        ]
    }
    result = verdict(report, "")
    assert result.status == 0 and result.errors == []
    assert result.warnings == ["not audited (no data on pypi): torch"]
    assert result.info == [
        "audited 1 of 3 distributions against pypi: 0 known vulnerabilities with a fix"
    ]


def test_no_data_for_any_version_warns_instead_of_passing_quietly():
    skip = "Dependency not found on PyPI and could not be audited: {} (1.0)"
    report = {"dependencies": [dep(n, "", skip=skip.format(n)) for n in ("a", "b", "c")]}
    result = verdict(report, "No known vulnerabilities found")
    assert result.status == 0 and "NONE was audited" in result.warnings[0]


@pytest.mark.parametrize(
    "stderr",
    [
        "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='pypi.org', port=443): "
        "Max retries exceeded with url: /pypi/x/1/json (Caused by NameResolutionError(...))",
        "requests.exceptions.ProxyError: Unable to connect to proxy",
        "requests.exceptions.ReadTimeout: HTTPSConnectionPool(host='pypi.org'): Read timed out.",
    ],
)
def test_an_unreachable_service_warns_and_does_not_fail(stderr):
    result = verdict(None, "Traceback (most recent call last):\n  ...\n" + stderr)
    assert result.status == 0 and "cannot be reached" in result.warnings[0]
    assert result.warnings[1] == stderr


def test_other_pip_audit_failures_fail():
    result = verdict(None, "/usr/bin/python: No module named pip_audit")
    assert result.status == 2 and "No module named pip_audit" in "\n".join(result.errors)
