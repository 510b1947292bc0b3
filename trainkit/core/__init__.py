"""The ground every stage stands on: what a run says and how it fails.

Owns the agent protocol (tagged lines, exit codes: protocol), expected failures and the crash log
(errors), credentials and their redaction (credentials), status.json and events.jsonl (status), stop
requests turned into "save, then exit 75" (signals), the one-trainer-per-output-dir lock (lock), a
checker's findings (report) and the library noise nobody can act on (library_warnings).

The bash scripts' fast path (trainkit.supervise.runctl) leans on core importing no torch.

May import: the standard library and PyYAML only; never another trainkit package.
"""
