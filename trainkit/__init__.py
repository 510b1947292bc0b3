"""trainkit: LoRA fine-tuning you launch with one command and stop worrying about.

The subpackages, in the order a run flows through them; each imports only those before it:

    core        protocol, exit codes, errors, status.json/events, credentials, signals, the lock
    config      the one config surface (YAML + command line), presets, where the model is
    data        chat data: loading, checks, conversion, the training view (the trained tokens)
    preflight   before the GPU is paid for: environment, GPU, storage, memory, speed, strategy, suggest
    evaluate    tool-call parsing and scoring, loading and merging adapters
    train       the run: resume point, checkpoints, callbacks, divergence, the training backend
    supervise   outside the trainer: liveness, the supervisor's decisions, status report, runs, rollback
    bench       trainkit's settings against plain TRL (throughput, padding, memory)
"""

__version__ = "0.1.0"
