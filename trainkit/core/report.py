"""What a preflight check found, and how it is told: one place for every checker.

Checks add findings to a Report instead of printing, so the same check can run inside
train.py (before the model loads), in a checker CLI, or in a test that reads the
findings directly. `Report.finish()` prints them in the agent protocol: passes and
warnings as they came, then the errors, so the last tagged line is the verdict.

    report = Report("PREFLIGHT")
    report.ok("config parses")
    report.warning("lora_alpha is 8", "use 2 x lora_r = 32")
    report.error("train.jsonl:12: no assistant turn", "add an assistant reply")
    sys.exit(report.finish("config and data are valid"))
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from trainkit.core import protocol
from trainkit.core.protocol import ExitCode

OK, WARNING, ERROR = "ok", "warning", "error"


@dataclass(frozen=True)
class Finding:
    level: str
    message: str
    hint: str | None = None


@dataclass
class Report:
    tag: str = "PREFLIGHT"
    findings: list[Finding] = field(default_factory=list)

    def ok(self, message: str) -> None:
        self.findings.append(Finding(OK, message))

    def warning(self, message: str, hint: str | None = None) -> None:
        self.findings.append(Finding(WARNING, message, hint))

    def error(self, message: str, hint: str | None = None) -> None:
        self.findings.append(Finding(ERROR, message, hint))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    def print_findings(self) -> None:
        """Passes and warnings in order, then errors, so an error is always last."""
        for finding in self.findings:
            if finding.level == OK:
                protocol.section(self.tag, finding.message)
            elif finding.level == WARNING:
                protocol.warning(finding.message, finding.hint)
        for finding in self.errors:
            protocol.error(finding.message, finding.hint)

    def finish(self, success: str) -> int:
        """Print everything plus the verdict; the exit code for the command."""
        self.print_findings()
        if self.errors:
            return ExitCode.ERROR
        protocol.success(success)
        return ExitCode.OK


class CheckerArgumentParser(argparse.ArgumentParser):
    """argparse for the checker CLIs: a usage error is one ERROR line and exit 1.

    argparse's own exit 2 would read as "crash loop" in the agent protocol.
    """

    def error(self, message: str):
        protocol.error(f"{self.prog}: {message}", f"see {self.prog} --help")
        raise SystemExit(ExitCode.ERROR)
