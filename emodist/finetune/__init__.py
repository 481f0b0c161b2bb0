"""Fine-tuning the labeler against the long tail: examples built by the run's own stages
(examples.py), each epoch drawn by a class-aware sampler (sampling.py), trained on Ray
Train (train.py), driven by job.py."""
