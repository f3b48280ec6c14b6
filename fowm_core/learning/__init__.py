"""Learning: the update, replay, augmentation, the offline→online loop and checkpoints."""
