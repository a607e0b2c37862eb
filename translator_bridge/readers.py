"""Who reads which language in each call: a live mirror of the KV bucket ``calls``.

The bridge follows the bucket with a watch (like the gateway's call mirror: an eventually
consistent copy, re-established if the watch fails) and falls back to a direct get for a
call it has not seen yet, so the first segment of a new call is not lost to the race.
"""

import asyncio
import contextlib

import msgspec
from nats.js.kv import KeyValue

from schemas.call_state import CallState
from schemas.codec import decoder_for
from schemas.logs import get_logger
from translator_bridge.languages import same_language

log = get_logger("translator_bridge.readers")

_DELETE_OPS = {"DEL", "PURGE"}


def languages_read(state: CallState, *, besides: str | None = None) -> set[str]:
    """Every language somebody in the call reads captions in (a participant's
    ``caption_language``, or the language they speak when they chose none), leaving out
    the participant ``besides``."""
    return {
        p.caption_language or p.language for p in state.participants if p.participant_id != besides
    }


def caption_languages(state: CallState, spoken: str, speaker: str) -> list[str]:
    """The languages one segment of ``speaker`` becomes captions in: every language the
    *others* in the call read, and the spoken one (the speaker sees their own words, never
    a translation of them: a language only the speaker reads is not translated into),
    each once, source first. A reader's regional variant of the spoken language (``en-gb``
    for ``en``) gets its own subject with the original text."""
    out = [spoken]
    for language in sorted(languages_read(state, besides=speaker)):
        if language != spoken:
            out.append(language)
    return out


def needs_translation(source: str, target: str) -> bool:
    return not same_language(source, target)


class CallReaders:
    """An eventually consistent copy of the ``calls`` bucket (see the module docstring)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self.calls: dict[str, CallState] = {}
        self._decoder: msgspec.json.Decoder[CallState] = decoder_for(CallState)
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    async def start(self, timeout_s: float = 30.0) -> None:
        watcher = await self._kv.watchall()
        self._task = asyncio.create_task(self._run(watcher), name="call-readers")
        await asyncio.wait_for(self.synced.wait(), timeout_s)

    async def _run(self, watcher: KeyValue.KeyWatcher) -> None:
        while True:
            try:
                await self._follow(watcher)
                log.warning("readers.watch_ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("readers.watch_failed", error=type(exc).__name__)
            while True:
                await asyncio.sleep(1.0)
                try:
                    watcher = await self._kv.watchall()
                    break
                except Exception as exc:
                    log.warning("readers.rewatch_failed", error=type(exc).__name__)
            self.calls.clear()  # the new watch replays every current entry

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            async for entry in watcher:
                if entry is None:
                    self.synced.set()
                    continue
                if entry.operation in _DELETE_OPS or entry.value is None:
                    self.calls.pop(entry.key, None)
                    continue
                self._store(entry.key, entry.value)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
            raise

    def _store(self, key: str, value: bytes) -> CallState | None:
        try:
            state = self._decoder.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("readers.undecodable_entry", call_id=key)
            return None
        self.calls[key] = state
        return state

    async def get(self, call_id: str) -> CallState | None:
        """The call's state: from the mirror, or read once if the watch has not shown it."""
        found = self.calls.get(call_id)
        if found is not None:
            return found
        try:
            entry = await self._kv.get(call_id)
        except Exception:  # absent, deleted, or JetStream away: nobody to caption for
            return None
        if entry.value is None:
            return None
        try:
            state = self._decoder.decode(entry.value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("readers.undecodable_entry", call_id=call_id)
            return None
        # The watch may have stored a newer state while the read was in flight: a late
        # read must not put the call's older languages back.
        newer = self.calls.get(call_id)
        if newer is not None and newer.seq > state.seq:
            return newer
        self.calls[call_id] = state
        return state

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
