"""Rule-based text-to-speech (eSpeak NG, from the ``espeakng-loader`` wheel) with the mouth of every video frame.

Training and evaluation only (``scripts/train_demo.py --tts``, ``scripts/eval_demo.py --tts``): speech of another
kind than framegen's own formant synthesiser, with real consonants (plosives, nasals, fricatives), English phoneme
durations and sentence prosody. The mouth that belongs to each 25 fps frame comes from eSpeak's phoneme events: the
phoneme under the frame sets the jaw (open vowels open it, close vowels and most consonants half-close it, /p b m/
shut the lips) and the lip shape (front vowels spread, back rounded vowels and /w/ round), and the signal's own
loudness envelope scales the opening, as :func:`framegen.toolkit.inputs.speech.articulation` does for the formant
synthesiser.

    pip install espeakng-loader   # a wheel with libespeak-ng and its data; nothing is downloaded at run time
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

VIDEO_FPS = 25
RATE = 16000

# eSpeak NG's C API (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_PHONEME, _EVENT_LIST_TERMINATED = 7, 0
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_CHARS_AUTO, _END_PAUSE = 0, 0x1000


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

# (jaw opening 0..1, lip spread -1 rounded .. +1 spread) per eSpeak English phoneme mnemonic (its base letters).
_VOWELS = {"a": (1.0, 0.3), "aa": (1.0, 0.0), "A": (1.0, 0.0), "A@": (0.9, 0.0), "a#": (0.8, 0.2), "aI": (0.9, 0.4),
           "aU": (0.9, -0.3), "E": (0.7, 0.5), "e": (0.6, 0.6), "eI": (0.6, 0.6), "e@": (0.7, 0.4), "I": (0.35, 0.7),
           "i": (0.25, 0.9), "i@": (0.35, 0.6), "0": (0.8, -0.5), "O": (0.75, -0.7), "o": (0.55, -0.8),
           "oU": (0.55, -0.8), "OI": (0.7, -0.4), "O@": (0.7, -0.6), "U": (0.35, -0.8), "u": (0.25, -1.0),
           "U@": (0.4, -0.7), "V": (0.7, 0.1), "@": (0.5, 0.0), "3": (0.5, 0.0), "@L": (0.4, 0.0)}
_CONSONANTS = {"p": (0.0, 0.0), "b": (0.0, 0.0), "m": (0.0, 0.0), "f": (0.12, 0.0), "v": (0.12, 0.0),
               "w": (0.2, -1.0), "r": (0.3, -0.4), "S": (0.25, -0.5), "Z": (0.25, -0.5), "tS": (0.25, -0.5),
               "dZ": (0.25, -0.5), "T": (0.3, 0.2), "D": (0.3, 0.2), "l": (0.35, 0.1), "j": (0.3, 0.6),
               "h": (0.5, 0.0), "k": (0.35, 0.0), "g": (0.35, 0.0), "N": (0.3, 0.0)}
_OTHER_CONSONANT = (0.25, 0.2)  # t d s z n and the rest: teeth nearly together, lips neutral

_WORD_TEXT = ("the of and to in is you that it he was for on are as with his they at be this from have or by one had "
         "not but what all were when we there can an your which their said if do will each about how up out them "
         "then she many some so these would other into has more her two like him see time could no make than first "
         "been its who now people my made over did down only way find use may water long little very after words "
         "called just where most know get through back much before go good new write our used me man too any day "
         "same right look think also around another came come work three word must because does part even place "
         "well such here take why things help put years different away again off went old number great tell men "
         "say small every found still between name should home big give air line set own under read last never us "
         "left end along while might next sound below saw something thought both few those always looked show large "
         "often together asked house world going want school important until form food keep children feet land side "
         "without boy once animals life enough took sometimes four head above kind began almost live page got earth "
         "need far hand high year mother light parts country father let night following picture being study second "
         "eyes soon times story boys since white days ever paper hard near sentence better best across during today "
         "others however sure means knew its try told young miles sun ways thing whole hear example heard several "
         "change answer room sea against top turned learn point city play toward five using himself usually")
WORDS = tuple(_WORD_TEXT.split())
VOICES = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3",
          "klatt4", "croak", "whisper", "Andy", "Annie", "Michael", "Alicia", "david", "linda", "john", "max",
          "Mr serious", "grandma", "grandpa", "edward", "benjamin", "caleb", "adam", "aunty", "belinda", "boris",
          "ian", "norbert")


@dataclass(frozen=True)
class TtsSpeech:
    """An utterance: 16 kHz float32 samples and, per 25 fps frame, the mouth's opening (0..1) and spread (-1..1)."""

    wav: np.ndarray
    opening: np.ndarray
    spread: np.ndarray
    text: str
    voice: str


class _Engine:
    """One eSpeak NG instance (the library is process-global and not re-entrant)."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data).encode(),
                                               _INITIALIZE_PHONEME_EVENTS)
        if self.rate <= 0:
            raise RuntimeError("eSpeak NG failed to initialise")
        self._samples: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._cb = _CALLBACK(self._on_audio)
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.lock = threading.Lock()

    def _on_audio(self, wav: ctypes.POINTER(ctypes.c_short), n: int, events: ctypes.POINTER(_Event)) -> int:
        if n > 0:
            self._samples.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        k = 0
        while events[k].type != _EVENT_LIST_TERMINATED:
            e = events[k]
            if e.type == _EVENT_PHONEME:
                self._events.append((int(e.sample), bytes(e.id.string).split(b"\0")[0].decode("ascii", "replace")))
            k += 1
        return 0

    def speak(self, text: str, voice: str, rate: int, pitch: int, prange: int) -> tuple[np.ndarray, list]:
        """Samples (int16 at the engine's rate) and ``(sample, phoneme)`` events of ``text``."""
        with self.lock:
            self._samples, self._events = [], []
            self.lib.espeak_SetVoiceByName(f"en-us+{voice}".encode())
            for what, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, prange), (_VOLUME, 100)):
                self.lib.espeak_SetParameter(what, value, 0)
            data = text.encode()
            self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_AUTO, None, None)
            self.lib.espeak_Synchronize()
            wav = np.concatenate(self._samples) if self._samples else np.zeros(0, np.int16)
            return wav, list(self._events)


_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def _shape(phoneme: str) -> tuple[float, float]:
    """Jaw and lip spread of one eSpeak phoneme mnemonic (stress marks and length marks stripped)."""
    p = phoneme.strip("'\",%=:;_!|")
    for table in (_VOWELS, _CONSONANTS):
        if p in table:
            return table[p]
    if p[:2] in _VOWELS:
        return _VOWELS[p[:2]]
    if p[:1] in _VOWELS:
        return _VOWELS[p[:1]]
    if p[:2] in _CONSONANTS:
        return _CONSONANTS[p[:2]]
    if p[:1] in _CONSONANTS:
        return _CONSONANTS[p[:1]]
    return _OTHER_CONSONANT if p else (0.0, 0.0)


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    """float32 mono ``x`` at ``rate`` -> 16 kHz (PyAV's resampler)."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    frame = av.AudioFrame.from_ndarray(x[None, :].astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float32)


def tts_speech(seconds: float, seed: int, *, level: float = 0.6, room: float = 0.003, reverb: float = 0.0,
               tilt: float = 0.0) -> TtsSpeech:
    """About ``seconds`` of eSpeak NG speech of random English sentences, a random voice, rate and pitch (``seed``),
    at peak ``level``, with a noise floor (``room``), a synthetic room's reverberation (``reverb``: the tail's
    level) and a spectral tilt (another microphone); and the mouth of every 25 fps frame."""
    rng = np.random.default_rng(seed)
    eng = _engine()
    voice = str(rng.choice(VOICES))
    parts, phones, total = [], [], 0
    while total < seconds * eng.rate:
        words = [str(rng.choice(WORDS)) for _ in range(int(rng.integers(3, 12)))]
        text = " ".join(words).capitalize() + str(rng.choice([".", ".", "?", "!", ","]))
        wav, events = eng.speak(text, voice, int(rng.uniform(120, 230)), int(rng.uniform(20, 80)),
                                int(rng.uniform(20, 90)))
        gap = np.zeros(int(rng.uniform(0.05, 0.5) * eng.rate), np.int16)
        phones += [(total + s, p) for s, p in events]
        parts += [wav, gap]
        total += wav.size + gap.size
    raw = np.concatenate(parts).astype(np.float32) / 32768.0
    n_in = int(seconds * eng.rate)
    raw = np.pad(raw, (0, max(0, n_in - raw.size)))[:n_in]
    # Per-sample phoneme shape (events mark where each phoneme starts).
    jaw = np.zeros(n_in, np.float32)
    lips = np.zeros(n_in, np.float32)
    starts = sorted((s, p) for s, p in phones if 0 <= s < n_in)
    for k, (s, p) in enumerate(starts):
        e = starts[k + 1][0] if k + 1 < len(starts) else n_in
        jaw[s:e], lips[s:e] = _shape(p)
    wav = _resample(raw, eng.rate)[: int(seconds * RATE)]
    per = int(eng.rate) / VIDEO_FPS
    frames = int(seconds * VIDEO_FPS)
    idx = (np.arange(frames)[:, None] * per + np.arange(int(per))[None, :]).astype(np.int64).clip(0, n_in - 1)
    rms = np.sqrt(np.mean(raw[idx] ** 2, axis=1))
    env = np.clip(rms / (0.5 * (np.percentile(rms, 98) + 1e-6)), 0.0, 1.0)
    opening = env * (0.2 + 0.8 * jaw[idx].mean(axis=1))
    spread = lips[idx].mean(axis=1) * np.minimum(1.0, 2.0 * env)
    # The room: an exponentially decaying noise tail (RT60 0.2-0.6 s), noise floor, a microphone's tilt.
    if reverb > 0:
        t60 = rng.uniform(0.2, 0.6)
        tail = np.arange(int(t60 * RATE)) / RATE
        ir = rng.standard_normal(tail.size) * np.exp(-6.9 * tail / t60) * reverb / np.sqrt(tail.size / 50.0)
        ir[0] = 1.0
        wav = np.convolve(wav, ir)[: wav.size]
    wav = wav + room * rng.standard_normal(wav.size)
    if tilt:
        wav = wav - tilt * np.concatenate([[0.0], wav[:-1]])
    peak = float(np.abs(wav).max()) or 1.0
    return TtsSpeech((level * wav / peak).astype(np.float32), opening.astype(np.float32),
                     np.clip(spread, -1, 1).astype(np.float32), "", voice)


if __name__ == "__main__":
    s = tts_speech(6.0, 1)
    print(s.voice, s.wav.shape, float(np.abs(s.wav).max()), s.opening[:50].round(2))
