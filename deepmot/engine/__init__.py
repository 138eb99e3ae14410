"""The loops and what they expect of a tracker: DeepMOT fine-tuning (:mod:`.deepmot_train`),
inference over sequences (:mod:`.inference`) and the trainable-tracker / inference protocols
(:mod:`.protocol`, the one module ``trackers`` may import). Run plumbing is in :mod:`deepmot.runtime`."""
