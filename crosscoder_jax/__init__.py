"""crosscoder_jax: sparse crosscoders across pretraining checkpoints, and RelIE."""
