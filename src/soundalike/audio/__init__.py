"""Audio decoding (:mod:`.io`), features (:mod:`.features`), synthesis and plots."""

from soundalike.audio.io import AUDIO_EXTENSIONS, AudioInfo, Waveform, info, is_audio_path, load, stream

__all__ = ["AUDIO_EXTENSIONS", "AudioInfo", "Waveform", "info", "is_audio_path", "load", "stream"]
