"""The safety check on generated images: a nudity detector run on every output image before it is
stored (``worker.safety.nudity_detector``), and what happens to a flagged one
(``worker.safety.screen``)."""
