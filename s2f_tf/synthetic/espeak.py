"""espeak-ng, driven via ctypes: a private copy of the library and a mirror of espeak-ng-data.

  _engine().synthesize(variant, text, rate_wpm, noise_seed, voice) -> int16 [n] at _engine().sample_rate
  _variant_text(...)  an espeak-ng voice-variant file (pitch, formants, flutter, roughness, breath)

The library comes from the `espeakng_loader` wheel. espeak-ng keeps function-static synthesis state
(e.g. its flutter phase) across utterances, so for byte-identical output the private copy of the .so
is loaded fresh for every utterance and unloaded afterwards (well under 1 ms). espeak_Initialize
seeds its breath-noise generator from the clock, so every utterance reseeds it
(espeak_ng_SetRandSeed) from the caller's `noise_seed`.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence

import numpy as np

from s2f_tf.synthetic.params import ACCENTS, ESPEAK_BUFFER_MS

_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT
_POS_CHARACTER = 1  # espeak_POSITION_TYPE
_ESPEAK_CHARS_UTF8 = 1  # espeak_Synth flags
_ESPEAK_RATE = 1  # espeak_PARAMETER
_ESPEAK_VOLUME = 2
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4
_VARIANT_NAME = "s2fvoice"  # our voice-variant file in <mirror>/espeak-ng-data/voices/!v/
_BASE_VOICE = ACCENTS[0]  # the probe utterance's voice; identities speak with their accent

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """A private, lazily prepared espeak-ng: its own copy of the .so and a mirror of espeak-ng-data.

    espeak-ng is process-global and keeps static state between utterances, so `synthesize` loads the
    private library copy, synthesises one utterance and unloads it again, all under a lock.
    """

    def __init__(self):
        # Imported here, on first use: importing s2f_tf.synthetic (make_identity, split_of, draw_face) then
        # works without the wheel, and a missing wheel fails with a message that names it.
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - the venv has it
            raise RuntimeError(
                "s2f_tf.synthetic needs the 'espeakng-loader' package (espeak-ng library + data)"
            ) from e
        src_lib = espeakng_loader.get_library_path()
        src_data = espeakng_loader.get_data_path()
        if not os.path.isfile(src_lib):
            raise RuntimeError(f"espeak-ng shared library not found at {src_lib}")
        self.pid = (
            os.getpid()
        )  # forked children build their own (they must not share the variant file)
        self.root = tempfile.mkdtemp(prefix="s2f_espeak_")
        atexit.register(self._cleanup)
        self.lib_path = os.path.join(self.root, "libespeak-ng-s2f.so")
        shutil.copyfile(src_lib, self.lib_path)
        data = os.path.join(self.root, "espeak-ng-data")
        os.makedirs(os.path.join(data, "voices", "!v"))
        for name in os.listdir(src_data):
            if name == "voices":
                continue
            try:
                os.symlink(os.path.join(src_data, name), os.path.join(data, name))
            except OSError:
                srcp = os.path.join(src_data, name)
                (shutil.copytree if os.path.isdir(srcp) else shutil.copyfile)(
                    srcp, os.path.join(data, name)
                )
        self.variant_path = os.path.join(data, "voices", "!v", _VARIANT_NAME)
        self.lock = threading.Lock()
        self.sample_rate = 0
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._on_audio)  # kept alive as long as this object
        # One probe utterance: fails early (with the path) if the library cannot be used.
        self.synthesize(
            _variant_text(100.0, 0.4, 2, 2, 0, (100,) * 6, (100,) * 6, (100,) * 6), "test", 175
        )

    def _cleanup(self) -> None:
        if os.getpid() == self.pid:
            shutil.rmtree(self.root, ignore_errors=True)

    def _on_audio(self, wav, numsamples, events) -> int:
        if wav and numsamples > 0:
            # string_at, not np.ctypeslib.as_array: the latter caches a ctypes array type per length (a leak)
            self._chunks.append(
                np.frombuffer(ctypes.string_at(wav, 2 * numsamples), dtype=np.int16).copy()
            )
        return 0

    def _load(self) -> ctypes.CDLL:
        try:
            lib = ctypes.CDLL(self.lib_path)
        except OSError as e:
            raise RuntimeError(
                f"cannot load the espeak-ng library {self.lib_path} "
                f"(copied from espeakng_loader.get_library_path()): {e}"
            ) from e
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_Terminate.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = ctypes.c_int
        return lib

    def synthesize(
        self, variant: str, text: str, rate_wpm: int, noise_seed: int = 1, voice: str = _BASE_VOICE
    ) -> np.ndarray:
        """int16 [samples] at `self.sample_rate` for `text` spoken by espeak-ng `voice` + `variant`.

        `noise_seed` seeds espeak's breath-noise generator (espeak_Initialize seeds it from the clock).
        """
        with self.lock:
            with open(self.variant_path, "w") as f:
                f.write(variant)
            lib = self._load()
            try:
                rate = lib.espeak_Initialize(
                    _AUDIO_OUTPUT_SYNCHRONOUS, ESPEAK_BUFFER_MS, self.root.encode(), 0
                )
                if rate <= 0:
                    raise RuntimeError(
                        f"espeak_Initialize failed (library {self.lib_path}, data {self.root}/espeak-ng-data)"
                    )
                self.sample_rate = rate
                lib.espeak_SetSynthCallback(self._callback)
                if lib.espeak_SetVoiceByName(f"{voice}+{_VARIANT_NAME}".encode()) != 0:
                    raise RuntimeError(f"espeak-ng: cannot select voice {voice}+{_VARIANT_NAME}")
                lib.espeak_SetParameter(_ESPEAK_RATE, int(rate_wpm), 0)
                lib.espeak_SetParameter(_ESPEAK_VOLUME, 100, 0)
                lib.espeak_SetParameter(_ESPEAK_PITCH, 50, 0)
                lib.espeak_SetParameter(_ESPEAK_RANGE, 50, 0)
                lib.espeak_ng_SetRandSeed(int(noise_seed) & 0x7FFFFFFF)
                self._chunks = []
                data = text.encode("utf-8") + b"\0"
                err = lib.espeak_Synth(
                    data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
                )
                if err != 0:
                    raise RuntimeError(f"espeak_Synth failed with error {err}")
                lib.espeak_Synchronize()
                chunks, self._chunks = self._chunks, []
            finally:
                lib.espeak_Terminate()
                handle = lib._handle
                del lib
                _ctypes.dlclose(handle)
        if not chunks:
            return np.zeros([0], np.int16)
        return np.concatenate(chunks).astype(np.int16)


_ENGINE: _Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Espeak:
    """The process's espeak-ng, prepared on first use."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None or _ENGINE.pid != os.getpid():
            _ENGINE = _Espeak()
        return _ENGINE


def _variant_text(
    pitch_base: float,
    pitch_range: float,
    flutter: int,
    roughness: int,
    breath: int,
    formant_freq: Sequence[int],
    formant_height: Sequence[int],
    formant_width: Sequence[int],
    female: bool = False,
) -> str:
    """An espeak-ng voice-variant file (see espeak-ng docs/voices.md)."""
    lo = max(20, int(round(pitch_base)))
    hi = max(lo + 1, int(round(pitch_base * (1.0 + pitch_range))))
    lines = [
        "language variant",
        f"name {_VARIANT_NAME}",
        f"gender {'female' if female else 'male'}",
        f"pitch {lo} {hi}",
        f"flutter {int(flutter)}",
        f"roughness {int(np.clip(roughness, 0, 7))}",
    ]
    for k in range(6):
        lines.append(
            f"formant {k} {int(formant_freq[k])} {int(formant_height[k])} {int(formant_width[k])}"
        )
    if breath > 0:
        b = int(breath)
        lines.append(
            f"breath {max(0, b - 1)} {b} {b + 1} {b + 1} {b + 1} {b + 1} {b} {max(0, b - 1)}"
        )
    return "\n".join(lines) + "\n"
