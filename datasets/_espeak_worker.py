"""Synthesise a list of utterances with espeak-ng (ctypes), run as a fresh subprocess.

espeak-ng keeps synthesis state across utterances inside a process (the output of an utterance
depends on what was synthesised before it), so the generator runs one fresh process per
request: the same request then gives the same samples. Usage::

    python _espeak_worker.py request.json out.npz

request.json: {"library": path, "data": path, "items": [{"text", "voice", "rate", "pitch",
"range"}, ...]}. out.npz: ``samples`` (int16, all utterances concatenated), ``lengths``,
``rate``. Only the standard library, numpy and ctypes are imported.
"""

from __future__ import annotations

import ctypes
import json
import sys

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 0x02
POS_CHARACTER = 1
ESPEAK_CHARS_AUTO = 0
ESPEAK_RATE, ESPEAK_PITCH, ESPEAK_RANGE = 1, 3, 4

CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def synthesize(library: str, data: str, items: list[dict]) -> tuple[list[np.ndarray], int]:
    lib = ctypes.CDLL(library)
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.c_void_p, ctypes.c_void_p,
    ]
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
    if rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed ({rate}) with data path {data}")
    chunks: list[np.ndarray] = []

    def on_audio(wav: ctypes._Pointer, n: int, events: int) -> int:
        if n > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = CALLBACK(on_audio)
    lib.espeak_SetSynthCallback(callback)
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed(ctypes.c_long(0))
    out = []
    for it in items:
        if lib.espeak_SetVoiceByName(it["voice"].encode()) != 0:
            raise RuntimeError(f"espeak-ng voice {it['voice']!r} not found")
        lib.espeak_SetParameter(ESPEAK_RATE, int(it["rate"]), 0)
        lib.espeak_SetParameter(ESPEAK_PITCH, int(it["pitch"]), 0)
        lib.espeak_SetParameter(ESPEAK_RANGE, int(it["range"]), 0)
        text = it["text"].encode() + b"\0"
        chunks.clear()
        err = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, ESPEAK_CHARS_AUTO, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed ({err}) for {it['text']!r}")
        lib.espeak_Synchronize()
        out.append(np.concatenate(chunks) if chunks else np.zeros(0, np.int16))
    return out, rate


def main(argv: list[str]) -> int:
    req = json.loads(open(argv[1]).read())
    waves, rate = synthesize(req["library"], req["data"], req["items"])
    np.savez(
        argv[2],
        samples=np.concatenate(waves).astype(np.int16) if waves else np.zeros(0, np.int16),
        lengths=np.array([len(w) for w in waves], dtype=np.int64),
        rate=np.array(rate),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
