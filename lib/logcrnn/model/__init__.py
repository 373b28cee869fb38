"""Models: the CRNN, its baselines, their inputs and metrics (plain PyTorch / scikit-learn)."""
