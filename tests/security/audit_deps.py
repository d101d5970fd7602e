"""`make audit`: pip-audit on the installed environment, against PyPI's vulnerability data.

    python -m tests.security.audit_deps

Exit 1 when an installed distribution has a known vulnerability with a fixed version (upgrade it
and pin the fix in constraints.txt). Exit 0 with a WARNING when the vulnerability service cannot be
reached, or has no data for the installed versions: a network problem must not fail CI, and it
must not read as a clean result either. Vulnerabilities without a fix are listed as warnings.
Exit 2 when pip-audit itself fails for another reason.

It lives with the security tests because test_audit_deps.py checks these verdicts on canned
pip-audit reports, without the network.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE = "pypi"
UNREACHABLE = re.compile(
    r"ConnectionError|ProxyError|NameResolutionError|Max retries exceeded|timed out|"
    r"Temporary failure in name resolution|Network is unreachable|SSLError|ServiceError|"
    r"Connection refused|RemoteDisconnected"
)


@dataclass
class Verdict:
    """The exit status and the lines to print."""

    status: int
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Everything to print, errors first."""
        return (
            [f"ERROR: {e}" for e in self.errors]
            + [f"WARNING: {w}" for w in self.warnings]
            + self.info
        )


def verdict(report: dict[str, Any] | None, stderr: str) -> Verdict:
    """Judge one pip-audit run from its JSON report (None if it wrote none) and its stderr."""
    if report is None:
        if UNREACHABLE.search(stderr):
            last = [line for line in stderr.strip().splitlines() if line.strip()][-1:]
            return Verdict(
                0,
                warnings=[
                    f"the vulnerability service ({SERVICE}) cannot be reached; dependencies were "
                    "NOT audited. Run `make audit` where PyPI's JSON API is reachable.",
                    *last,
                ],
            )
        return Verdict(2, errors=["pip-audit failed:", *stderr.strip().splitlines()[-15:]])
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason") and "editable" not in d["skip_reason"]]
    audited = [d for d in deps if not d.get("skip_reason")]
    result = Verdict(0)
    for dep in audited:
        for vuln in dep.get("vulns", []):
            ids = ", ".join([vuln["id"], *vuln.get("aliases", [])])
            where = f"{dep['name']} {dep['version']}: {ids}"
            if vuln.get("fix_versions"):
                result.errors.append(f"{where}; fixed in {', '.join(vuln['fix_versions'])}")
            else:
                result.warnings.append(f"{where}; no fixed version yet")
    if result.errors:
        result.status = 1
    if deps and not audited:
        example = skipped[0]["skip_reason"] if skipped else "no reason given"
        result.warnings.append(
            f"the vulnerability service ({SERVICE}) had no data for any of the {len(skipped)} "
            f"installed distributions, so NONE was audited (pip-audit: {example!r}). Is PyPI's "
            "JSON API reachable from here, or only a package mirror?"
        )
    elif skipped:
        names = ", ".join(f"{d['name']}" for d in skipped)
        result.warnings.append(f"not audited (no data on {SERVICE}): {names}")
    if audited:
        result.info.append(
            f"audited {len(audited)} of {len(deps)} distributions against {SERVICE}: "
            f"{len(result.errors)} known vulnerabilities with a fix"
        )
    return result


def run_pip_audit() -> tuple[dict[str, Any] | None, str]:
    """Run pip-audit on this interpreter's environment; its JSON report (or None) and stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip_audit",
                "--vulnerability-service",
                SERVICE,
                "--skip-editable",
                "--progress-spinner",
                "off",
                "--timeout",
                "30",
                "--format",
                "json",
                "--output",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        report = None
        if out.exists():
            try:
                report = json.loads(out.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                report = None
        return report, proc.stderr + proc.stdout


def main() -> int:
    """Run the audit and print its verdict."""
    report, stderr = run_pip_audit()
    result = verdict(report, stderr)
    for line in result.lines():
        print(line)
    if result.status == 0 and not result.warnings:
        print("pip-audit: no known vulnerabilities")
    return result.status


if __name__ == "__main__":
    sys.exit(main())
