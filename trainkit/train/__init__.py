"""The run, top to bottom: config -> resume point -> crash-loop check -> train -> final adapter.

Owns train.py's flow (run), claiming the output dir (launch), which checkpoint is safe to resume from
(checkpoints, nodes), resume metadata and the crash-loop verdict (resume), what defines a run
(fingerprint), --more_steps (continuation), the per-step callbacks (callbacks, eval_callback,
timed_saves), the divergence guard (divergence), W&B continuity (tracking), --dry-run (dryrun), the
resilience tests' fault hooks (faults), and the seam to the training library (backend).

The seam: run.py talks to the training library only through trainkit.train.backend.Backend (build a
session from the config, the data and trainkit's callbacks; train it from a checkpoint or the start;
save the final adapter; save the last good state after a divergence). TRL's SFTTrainer (trainer) is
its first implementation, trainkit's own loop over mlx-lm (mlx_backend) the second.

May import: trainkit.core, trainkit.config, trainkit.data, trainkit.preflight, trainkit.evaluate;
never trainkit.supervise (the supervisor runs the trainer, not the other way round).
"""
