"""Demo assets: a deterministic synthetic image-caption world for training and evaluating a tiny AITQE imitation."""
