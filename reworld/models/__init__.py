"""The networks, as diffusers `ModelMixin`s: the VAE wrapper, the Video DiT, the Action DiT and their shared layers."""
