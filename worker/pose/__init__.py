"""Pose photos: a person's body found in a photo of anyone (``worker.pose.blazepose``: BlazePose's
models on LiteRT) and turned into the pose ControlNet's skeleton with this person's head where the
photo's head is (``worker.pose.photo_skeleton``)."""
