"""Music: a small seeded synthesiser (drums, bass, chords, maybe an arpeggio), encoded by ffmpeg."""

from __future__ import annotations

import math
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from reelfab.media import children
from reelfab.media.errors import MediaError
from reelfab.media.tools import tool

_SR = 48000
_MAJOR = (0, 2, 4, 5, 7, 9, 11)
_MINOR = (0, 2, 3, 5, 7, 8, 10)
_PROGRESSIONS = {  # scale degrees, one chord a bar
    "major": ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 0, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 5, 3, 4)),
}
_KICKS = ((0, 8), (0, 6, 8), (0, 7, 10), (0, 3, 8, 11), (0, 8, 10))
_BASSLINES = ((0, 6, 8, 14), (0, 3, 8, 11), (0, 2, 4, 8, 10, 12), (0, 10), (0, 7, 8, 15))


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _add(out: NDArray[Any], t0: float, sound: NDArray[Any], pan: float = 0.0, gain: float = 1.0) -> None:
    """Mix a mono ``sound`` into stereo ``out`` at ``t0`` seconds; ``pan`` -1 left .. +1 right."""
    i = int(round(t0 * _SR))
    if i >= len(out):
        return
    sound = sound[: len(out) - i] * gain
    out[i : i + len(sound), 0] += sound * math.sqrt(0.5 * (1 - pan))
    out[i : i + len(sound), 1] += sound * math.sqrt(0.5 * (1 + pan))


def _t(seconds: float) -> NDArray[Any]:
    return np.arange(int(seconds * _SR), dtype=np.float32) / _SR


def _kick() -> NDArray[Any]:
    t = _t(0.35)
    freq = 46 + 110 * np.exp(-t * 35)
    return np.asarray(np.sin(2 * np.pi * np.cumsum(freq) / _SR) * np.exp(-t * 9), dtype=np.float32)


def _hiss(rng: np.random.Generator, seconds: float, decay: float) -> NDArray[Any]:
    t = _t(seconds)
    noise = rng.standard_normal(len(t)).astype(np.float32)
    bright = noise - np.convolve(noise, np.ones(4, np.float32) / 4, mode="same")  # crude high-pass
    hiss: NDArray[Any] = bright * np.exp(-t * decay)
    return hiss


def _snare(rng: np.random.Generator) -> NDArray[Any]:
    t = _t(0.22)
    snare: NDArray[Any] = 0.6 * _hiss(rng, 0.22, 20) + 0.45 * np.sin(2 * np.pi * 185 * t) * np.exp(-t * 25)
    return snare


def _tone(
    midi: float, seconds: float, harmonics: tuple[float, ...], attack: float, decay: float
) -> NDArray[Any]:
    t = _t(seconds)
    phase = 2 * np.pi * _hz(midi) * t
    wave_ = sum(a * np.sin((k + 1) * phase) for k, a in enumerate(harmonics))
    env = np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t * decay)
    release = np.clip((seconds - t) / 0.03, 0, 1)  # no click at the end
    return np.asarray(wave_ * env * release, dtype=np.float32)


def _synth_music(seed: int, seconds: float, bpm: int | None = None) -> NDArray[Any]:
    """Stereo float32 at 48 kHz: kick, snare, hats, bass, a chord pad and (some seeds) an arpeggio."""
    rng = np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, 0xB0B]))
    bpm = bpm or int(rng.integers(84, 129))
    mode = "minor" if rng.random() < 0.5 else "major"
    scale = _MINOR if mode == "minor" else _MAJOR
    progression = _PROGRESSIONS[mode][int(rng.integers(0, 4))]
    root = 33 + int(rng.integers(0, 12))  # the bass's key note, MIDI (A1..G#2)
    kicks = _KICKS[int(rng.integers(0, len(_KICKS)))]
    bassline = _BASSLINES[int(rng.integers(0, len(_BASSLINES)))]
    hats = int(rng.choice([1, 2, 4]))  # a hat every 1, 2 or 4 sixteenths
    arpeggio = rng.random() < 0.6
    step = 60.0 / bpm / 4
    out = np.zeros((int(round(seconds * _SR)), 2), np.float32)
    kick = _kick()
    for bar in range(int(seconds / (16 * step)) + 1):
        degree = progression[bar % len(progression)]
        chord = [scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]
        t_bar = bar * 16 * step
        for note in chord:  # the pad: soft, slightly detuned, held for the bar
            for detune, pan in ((-0.06, -0.5), (0.06, 0.5)):
                _add(
                    out,
                    t_bar,
                    _tone(root + 24 + note + detune, 16 * step, (1.0, 0.0, 0.11), 0.25, 0.4),
                    pan,
                    0.05,
                )
        for s in range(16):
            t0 = t_bar + s * step
            if t0 >= seconds:
                break
            if s in kicks:
                _add(out, t0, kick, 0.0, 0.8)
            if s in (4, 12):
                _add(out, t0, _snare(rng), 0.1, 0.35)
            if s % hats == 0:
                _add(out, t0, _hiss(rng, 0.05, 90), 0.3, 0.12 if s % 4 else 0.18)
            if s in bassline:
                _add(out, t0, _tone(root + chord[0], 2 * step, (1.0, 0.35, 0.15), 0.005, 3.0), 0.0, 0.35)
            if arpeggio and s % 2 == 0:
                note = chord[(s // 2) % 3] + 12 * (1 + (s // 6) % 2)
                _add(out, t0, _tone(root + 24 + note, 2 * step, (1.0, 0.25), 0.003, 6.0), -0.3, 0.08)
    return _master(out, seconds)


def _master(out: NDArray[Any], seconds: float, fade_out: float = 1.0) -> NDArray[Any]:
    t = np.arange(len(out), dtype=np.float32) / _SR
    env = np.clip(t / 0.05, 0, 1) * np.clip((seconds - t) / min(fade_out, seconds / 4), 0, 1)
    out *= env[:, None]
    peak = float(np.abs(out).max()) or 1.0
    return (out * (0.89 / peak)).astype(np.float32)


def _write_wav(path: Path, audio: NDArray[Any]) -> None:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(_SR)
        f.writeframes(pcm.tobytes())


def _encode_audio(audio: NDArray[Any], folder: Path, codec: str, target: Path | None = None) -> Path:
    """WAV in ``folder`` (temporary), then AAC (.m4a) or MP3 through ffmpeg; the WAV is removed."""
    wav = folder / "track.wav"
    _write_wav(wav, audio)
    out = target or folder / ("track.m4a" if codec == "aac" else "track.mp3")
    args = ["-c:a", "aac", "-b:a", "160k"] if codec == "aac" else ["-c:a", "libmp3lame", "-b:a", "192k"]
    cmd = [
        tool("ffmpeg"),
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-i",
        str(wav),
        *args,
        "-ar",
        str(_SR),
        "-ac",
        "2",
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:a",
        "+bitexact",
        str(out),
    ]
    proc = children.run(cmd, capture_output=True, text=True)
    wav.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise MediaError(f"ffmpeg could not encode audio to {out}: {proc.stderr.strip()[-300:]}")
    return out


def music_bed(path: Path, *, seed: int, seconds: float = 20.0, bpm: int | None = None) -> Path:
    """A seeded music bed (drums, bass, chords, maybe an arpeggio) as AAC (.m4a, .aac, .mp4) or MP3
    (.mp3), chosen by the suffix. Tempo, key, mode, progression and patterns all come from the seed."""
    if seconds <= 0:
        raise ValueError(f"music_bed needs a positive duration, not {seconds}")
    codec = "mp3" if path.suffix.lower() == ".mp3" else "aac"
    with tempfile.TemporaryDirectory(prefix="reelfab-music-") as tmp:
        _encode_audio(_synth_music(seed, seconds, bpm), Path(tmp), codec, target=path)
    return path
