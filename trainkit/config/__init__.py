"""One config surface: the YAML and command line parsed into TRL's dataclasses plus trainkit's keys.

Owns parsing and validating a config (settings), `train.py --help` (help), the named starting points
of suggest_config.py (presets), and where the config's model and tokenizer are on disk (model_source).

May import: trainkit.core.
"""
