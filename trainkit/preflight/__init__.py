"""Everything decided before a GPU is paid for: will this run work, fit, and go fast on this machine.

Owns the config checks (checks), the machine (environment, gpu, gpu_models, device_figures, torch_build,
attention_install), the disk (storage), the memory model (memory), the speed and multi-GPU decisions
(speed, strategy), and a config sized for the machine (suggest).

May import: trainkit.core, trainkit.config, trainkit.data.
"""
