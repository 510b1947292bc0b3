"""Outside the trainer: what a run is doing, what its supervisor does next, and the tools that steer it.

Owns liveness and the supervisor's next move (supervision), every decision the bash scripts ask for
(runctl), the status command's report (status_report, wandb_summary), every run under outputs/ and
stopping one (runs), rolling back to a checkpoint (rollback), the live terminal view (monitor) and
`make demo`'s own output dir (demo).

May import: trainkit.core, trainkit.config, trainkit.preflight, trainkit.train (for files a run writes:
checkpoints, resume metadata, the launch claim).
"""
