"""Developer tools: the bootstrap script and the call demo (``tools/demo_call.py``)."""
