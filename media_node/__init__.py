"""The media node: an SFU on aiortc that forwards media without re-encoding."""
