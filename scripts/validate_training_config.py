"""Validate a training config, its data and its memory needs before any GPU time is spent.

    python scripts/validate_training_config.py --config configs/training_config_h100.yaml
    python scripts/validate_training_config.py --config configs/smoke.yaml --max_length 256
    python scripts/validate_training_config.py --config configs/smoke.yaml --no-data
    python scripts/validate_training_config.py --config configs/smoke.yaml --remember logs/.preflight

Takes the same config and overrides as train.py. Checks: unknown keys (with a
did-you-mean), impossible values, LoRA ranges, every lora_target_modules entry against
the architecture (built on the meta device, no weights), a gated model without a token,
every data line (file:line on errors), duplicates and train/validation overlap, chat
template and token lengths, the peak-memory estimate against the platform budget, and
the disk a run needs. Exit 0 when valid (warnings allowed), 1 on any error.

--remember DIR records a pass in DIR, and when the same inputs (command line, config bytes, the
files it names, trainkit and library versions) passed there within the hour, prints one line and
that pass's warnings instead of checking again: setup.sh and train.sh pass it, so a launch right
after setup does not repeat the whole preflight. train.py checks everything at its start anyway.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainkit.core.errors import ConfigError

SUMMARY_LINES = ("effective batch:", "memory:", "duration estimate")
from trainkit.core.report import Report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    data = "--no-data" not in argv
    argv = [a for a in argv if a != "--no-data"]
    remember = None
    if "--remember" in argv:
        at = argv.index("--remember")
        if at + 1 >= len(argv):
            report = Report("PREFLIGHT")
            report.error("--remember needs a folder", "e.g. --remember logs/.preflight")
            return report.finish("")
        remember = Path(argv[at + 1])
        del argv[at:at + 2]
    report = Report("PREFLIGHT")
    if remember is not None and data:
        from trainkit.preflight.passed import recalled

        earlier = recalled(remember, argv)
        if earlier is not None:
            report.ok(f"unchanged since this check passed {earlier['age']:.0f} s ago "
                      f"({time.strftime('%H:%M:%S', time.localtime(earlier['passed_at']))}): the config, the files "
                      "it names, trainkit and the libraries; not repeated (train.py checks again at its start)")
            # The run's shape stays on screen: the batch, the memory and the duration lines, then every WARNING.
            report.findings += [f for f in earlier["findings"]
                                if f.level != "ok" or f.message.startswith(SUMMARY_LINES)]
            return report.finish("training config is valid (unchanged)")
    try:
        from trainkit.config.settings import parse

        config = parse(argv)
    except ConfigError as exc:
        report.error(exc.message, exc.hint)
        return report.finish("")
    from trainkit.preflight.checks import preflight

    report.ok(f"config parses: {config.model.model_name_or_path} -> {config.output_dir} "
              f"({config.platform}, {config.device})")
    preflight(config, report, data=data)
    if remember is not None and data and not report.errors:
        from trainkit.preflight.passed import remember as record

        record(remember, argv, report.findings)
    return report.finish("training config is valid" + ("" if data else " (data not checked)"))


if __name__ == "__main__":
    from trainkit.core.protocol import run_command

    sys.exit(run_command(main))
