"""HTTP gateway. Imports nothing heavy: no torch, diffusers or insightface."""
