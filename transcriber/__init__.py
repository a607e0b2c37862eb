"""Transcriber workers: audio chunks in, transcript segments out (faster-whisper)."""
