"""Stage ``predict`` and ``evaluate``: probability tiles from a trained model, and their scores against the masks."""
