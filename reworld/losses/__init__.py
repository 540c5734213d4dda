"""Training losses as pure functions: tensors in, one value per sample (or named terms) out."""
