import pytest

from schemas import subjects
from schemas.ids import InvalidId, check_id


def test_subjects_are_built_from_valid_tokens() -> None:
    assert subjects.call_event("c1", "participant_joined") == "call.evt.c1.participant_joined"
    assert subjects.call_command("c1", "migrate_to_sfu") == "call.cmd.c1.migrate_to_sfu"
    assert subjects.media_rpc("node-A", "open_session") == "media.rpc.node-A.open_session"
    assert subjects.audio_chunk("c1", "p_2") == "audio.chunk.c1.p_2"
    assert subjects.caption("c1", "pt-br") == "caption.c1.pt-br"
    assert subjects.gateway_deliver("gw-1") == "client.gw-1.deliver"
    assert subjects.user_signal("u1") == "user.u1.signal"
    assert subjects.service_heartbeat("gateway", "gw-1") == "svc.heartbeat.gateway.gw-1"


@pytest.mark.parametrize("bad", ["", "a.b", "a*", ">", "a b", "x" * 129, "é", "a\n"])
def test_ids_with_dots_wildcards_or_blanks_are_refused(bad: str) -> None:
    with pytest.raises(InvalidId):
        subjects.call_event(bad, "ended")
    with pytest.raises(InvalidId):
        subjects.audio_chunk("call", bad)


@pytest.mark.parametrize("lang", ["EN", "e", "en.fr", "en_US", "*"])
def test_caption_language_is_validated(lang: str) -> None:
    with pytest.raises(ValueError, match="lang"):
        subjects.caption("c1", lang)


def test_error_does_not_echo_the_offending_id() -> None:
    with pytest.raises(InvalidId) as info:
        check_id("secret.user@example.com", "user_id")
    assert "example.com" not in str(info.value)


def test_dead_letters_are_never_rewrapped() -> None:
    once = subjects.dead_letter("call.evt.c1.ended")
    assert once == "dlq.call.evt.c1.ended"
    assert subjects.dead_letter(once) == once


def test_no_subject_literals_outside_schemas() -> None:
    """One source of truth: service code builds subjects only through schemas.subjects."""
    import pathlib
    import re

    pattern = re.compile(
        r"""["'](call\.(evt|cmd)|media\.(rpc|node)|audio\.chunk|transcript\.segment|caption\.|client\.|user\.|svc\.heartbeat|dlq\.)"""
    )
    root = pathlib.Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("gateway", "media_node", "transcriber", "translator_bridge", "devstack"):
        for path in (root / package).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(root)}:{number}")
    assert offenders == []


def test_services_never_import_each_other() -> None:
    import ast
    import pathlib

    services = {"gateway", "media_node", "transcriber", "translator_bridge"}
    root = pathlib.Path(__file__).resolve().parents[2]
    offenders = []
    for package in services:
        for path in (root / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    if top in services - {package} or top == "devstack":
                        offenders.append(f"{path.relative_to(root)} imports {name}")
    assert offenders == []
