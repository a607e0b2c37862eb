"""Known sentences spoken by espeak-ng, as 16 kHz mono s16 PCM (tests and benchmarks).

espeak-ng writes a WAV at its own rate; sox resamples it to 16 kHz mono. Results are cached
per (language, voice, text) in the temporary folder, so a test session synthesises each
sentence once. Both programs are installed by ``tools/bootstrap.sh``.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
Pcm = npt.NDArray[np.int16]

#: Meeting-style sentences, 2-4 s each when spoken by espeak-ng.
SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "Good morning everyone, thank you for joining the call.",
        "Can everyone hear me clearly now?",
        "Let us start with the project update.",
        "The new version will be ready next week.",
        "I would like to share my screen with you.",
        "We need to finish the report by Friday.",
        "The meeting will end at three o'clock.",
        "Please send me the document after the call.",
        "I agree with the plan for the next month.",
        "The team has worked very hard this year.",
        "Could you repeat the last question please?",
        "We will talk about the budget tomorrow.",
        "The customer was happy with the results.",
        "My camera is not working this morning.",
        "Let me check the numbers and call you back.",
        "The train was late again today.",
        "I will write the summary of this meeting.",
        "We have three new people in the team.",
        "The office will be closed on Monday.",
        "Thank you all, see you next week.",
        "The weather is very nice in the city today.",
        "I think we should ask the manager first.",
        "The price of the new computer is too high.",
        "We can meet again on Thursday afternoon.",
        "Please open the file that I sent yesterday.",
        "The children are playing in the garden.",
        "I am working from home this week.",
        "The plan looks good to me.",
        "We should test the software before the release.",
        "Everyone is welcome to the party on Saturday.",
        "The book is on the table in the kitchen.",
        "I need more time to read the contract.",
    ),
    "fr": (
        "Bonjour à tous, merci d'être venus.",
        "Est-ce que tout le monde m'entend bien?",
        "Nous allons commencer la réunion.",
        "Le projet sera prêt la semaine prochaine.",
        "Je voudrais partager mon écran avec vous.",
        "Nous devons finir le rapport vendredi.",
        "La réunion se termine à trois heures.",
        "Envoyez-moi le document après l'appel.",
        "Je suis d'accord avec le plan.",
        "L'équipe a beaucoup travaillé cette année.",
        "Pouvez-vous répéter la question?",
        "Nous parlerons du budget demain.",
        "Le client était content des résultats.",
        "Ma caméra ne marche pas ce matin.",
        "Le train était encore en retard aujourd'hui.",
        "Je vais écrire le résumé de la réunion.",
        "Nous avons trois nouvelles personnes dans l'équipe.",
        "Le bureau sera fermé lundi.",
        "Merci à tous, à la semaine prochaine.",
        "Il fait très beau en ville aujourd'hui.",
        "Je pense que nous devons demander au directeur.",
        "Le prix du nouvel ordinateur est trop élevé.",
        "Nous pouvons nous revoir jeudi après-midi.",
        "Ouvrez le fichier que j'ai envoyé hier.",
        "Les enfants jouent dans le jardin.",
        "Je travaille à la maison cette semaine.",
        "Le plan me semble bon.",
        "Il faut tester le logiciel avant la sortie.",
        "Tout le monde est invité à la fête samedi.",
        "Le livre est sur la table de la cuisine.",
        "J'ai besoin de plus de temps pour lire le contrat.",
        "La voiture est devant la maison.",
    ),
    "es": (
        "Buenos días a todos, gracias por venir.",
        "¿Me oyen todos bien?",
        "Vamos a empezar la reunión.",
        "El proyecto estará listo la próxima semana.",
        "Quiero compartir mi pantalla con ustedes.",
        "Tenemos que terminar el informe el viernes.",
        "La reunión termina a las tres.",
        "Envíame el documento después de la llamada.",
        "Estoy de acuerdo con el plan.",
        "El equipo ha trabajado mucho este año.",
        "¿Puede repetir la pregunta, por favor?",
        "Hablaremos del presupuesto mañana.",
    ),
}


class SpeechUnavailable(RuntimeError):
    """espeak-ng or sox is not installed (``make setup`` installs both)."""


def _cache_dir() -> Path:
    folder = Path(tempfile.gettempdir()) / "meeshy-speech-cache"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


#: Words per minute per language: espeak's French and Spanish are easier to recognise a
#: little slower (base's word error rate on French drops from ~0.88 at 160 to ~0.71).
SPEEDS = {"en": 160, "fr": 130, "es": 140}


def speak(text: str, language: str, *, voice: str | None = None, speed: int | None = None) -> Pcm:
    """``text`` spoken by espeak-ng in ``language``, 16 kHz mono s16, no leading silence."""
    speed = speed or SPEEDS.get(language, 150)
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SpeechUnavailable(f"{tool} is not installed (run make setup)")
    voice = voice or language
    key = hashlib.sha256(f"{voice}|{speed}|{text}".encode()).hexdigest()[:24]
    out = _cache_dir() / f"{key}.wav"
    if not out.exists():
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            conv = Path(tmp) / "16k.wav"
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(conv)],
                check=True,
                capture_output=True,
            )
            # Another process may write the same sentence at the same time: replace atomically.
            staged = out.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(conv, staged)
            os.replace(staged, out)
    return trim(read_wav(out))


def read_wav(path: Path) -> Pcm:
    with wave.open(str(path), "rb") as wav:
        if wav.getframerate() != SAMPLE_RATE or wav.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16 kHz mono")
        frames = wav.readframes(wav.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.int16)


def trim(pcm: Pcm, threshold: int = 200) -> Pcm:
    """Drop leading and trailing near-silence (espeak pads both ends)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > threshold)
    if len(loud) == 0:
        return pcm[:0]
    return pcm[int(loud[0]) : int(loud[-1]) + 1]


def silence(seconds: float) -> Pcm:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.int16)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference length, after normalisation."""
    ref = normalise(reference).split()
    hyp = normalise(hypothesis).split()
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


def normalise(text: str) -> str:
    """Lower case, punctuation to spaces (apostrophes too), single spaces."""
    out = []
    for ch in text.lower():
        out.append(ch if ch.isalnum() else " ")
    return " ".join("".join(out).split())
