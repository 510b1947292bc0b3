"""Fine-tune a chat model with LoRA: TRL's SFTTrainer, made safe to walk away from.

    python train.py --config configs/smoke.yaml
    python train.py --config configs/training_config_h100.yaml --max_steps 2000
    python train.py --help        # --config, trainkit's keys, the TRL keys people set
    python train.py --help-all    # every key TRL takes

Resumes by itself from the newest complete checkpoint in output_dir; see
docs/AGENT_PROTOCOL.md for the exit codes and tagged lines it prints.
"""

import sys

from trainkit.train.run import main

if __name__ == "__main__":
    sys.exit(main())
