"""The InstantID engine on diffusers: device policy, loading from one model folder, the pipeline
subclass that feeds IdentityNet the face tokens, and the offline tiny profile."""
