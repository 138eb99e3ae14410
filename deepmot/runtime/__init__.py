"""The runtime layer under every training loop: run directories and logging (:mod:`.run`),
atomic checkpoints and exact resume (:mod:`.checkpoint`), seeding (:mod:`.seed`), device
resolution (:mod:`.device`), distributed set-up under ``torchrun`` or SLURM (:mod:`.distributed`),
preemption by SIGTERM / SIGUSR1 (:mod:`.preempt`) and curves (:mod:`.plots`).

It imports nothing of deepmot above ``config``, ``errors``, ``fileio``, ``progress`` (progress
bars / lines of long loops) and ``machine`` (the machine line a run logs), so the DHN, the SOT
pre-training and the DeepMOT loop can all stand on it.
"""
