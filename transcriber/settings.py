"""Transcriber settings, read once from the environment."""

from schemas.settings import ServiceSettings


class TranscriberSettings(ServiceSettings, frozen=True, kw_only=True):
    """Settings of one transcriber instance."""

    #: A CTranslate2 Whisper model directory; empty means the bundled tiny.en model.
    whisper_model_dir: str = ""
    #: Queue group shared by every transcriber instance (each chunk goes to one).
    transcriber_queue: str = "transcribers"
