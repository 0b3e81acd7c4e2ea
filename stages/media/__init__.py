"""Media access shared by every stage: ``locate`` (where a sample's bytes are, within its dataset's
roots) and ``read`` (decoding video frames and images)."""
