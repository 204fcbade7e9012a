"""Training: the one training loop, teacher adaptation and its gate, student distillation and its loss."""
