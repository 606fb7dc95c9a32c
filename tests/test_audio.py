"""clmr.audio: every format x input rate x channel layout decodes to float32 mono at the asked rate
with the right pitch and length; unreadable, empty, silent and non-finite files raise typed errors."""

import numpy as np
import pytest
import soundfile as sf

from clmr.audio import (
    AudioError,
    EmptyAudioError,
    SilentAudioError,
    UnreadableAudioError,
    info,
    load,
)
from clmr.errors import ClmrError

FORMATS = {  # extension -> (soundfile format, subtype)
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "opus": ("OGG", "OPUS"),
}


def _write(path, rate, channels, seconds=0.5, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.4 * np.sin(2 * np.pi * freq * t)
    data = np.stack([tone * _gain(c, channels) for c in range(channels)], axis=1).astype(np.float32)
    fmt, subtype = FORMATS[path.suffix[1:]]
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    return data


def _gain(channel, channels):
    return 1.0 - 0.5 * channel / channels


def _peak_hz(x, rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * rate / len(x)


@pytest.mark.parametrize("ext", list(FORMATS))
@pytest.mark.parametrize("rate", [16000, 44100, 48000])
@pytest.mark.parametrize("channels", [1, 2, 4])  # 5.1 would band-limit the LFE channel
def test_formats_rates_channels(tmp_path, ext, rate, channels):
    if ext == "opus" and rate == 44100:
        rate = 24000  # opus only encodes 8/12/16/24/48 kHz
    if ext == "mp3" and channels > 2:
        pytest.skip("mp3 holds at most two channels")
    path = tmp_path / f"tone.{ext}"
    _write(path, rate, channels)
    x = load(path, sample_rate=22050)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 0.5 * 22050) < 0.02 * 22050  # codecs may pad a few ms
    assert abs(_peak_hz(x, 22050) - 440.0) < 5.0
    # mean of the channels: a sine of amplitude 0.4 * mean(gains), RMS = amplitude / sqrt(2)
    expected = 0.4 * np.mean([_gain(c, channels) for c in range(channels)]) / np.sqrt(2)
    middle = x[len(x) // 4 : 3 * len(x) // 4]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(expected, rel=0.1)
    sr, ch, frames = info(path)
    assert (sr, ch) == (rate, channels) and frames > 0


def test_same_rate_is_exact_and_multichannel_keeps_channels(tmp_path):
    path = tmp_path / "a.wav"
    data = _write(path, 22050, 2)
    x = load(path, 22050)
    np.testing.assert_allclose(x, data.mean(axis=1), atol=2 / 32768)
    both = load(path, 8000, mono=False)
    assert both.shape[0] == 2 and both.dtype == np.float32
    assert abs(both.shape[1] - 4000) <= 1


def test_resampling_changes_length_not_pitch(tmp_path):
    path = tmp_path / "a.flac"
    _write(path, 44100, 1, seconds=1.0, freq=1000.0)
    x = load(path, 8000)
    assert len(x) == 8000
    assert abs(_peak_hz(x, 8000) - 1000.0) < 3.0


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.mp3"
    path.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(UnreadableAudioError) as err:
        load(path)
    assert "broken.mp3" in str(err.value) and err.value.reason == "unreadable"
    assert isinstance(err.value, AudioError) and isinstance(err.value, ClmrError)
    with pytest.raises(UnreadableAudioError):
        info(path)


def test_missing_file(tmp_path):
    with pytest.raises(UnreadableAudioError, match="no such file"):
        load(tmp_path / "nope.wav")


def test_truncated_file(tmp_path):
    path = tmp_path / "cut.flac"
    _write(path, 22050, 1)
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(AudioError) as err:
        load(path)
    assert "cut.flac" in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros((0, 1), np.float32), 22050)
    with pytest.raises(EmptyAudioError) as err:
        load(path)
    assert "empty.wav" in str(err.value) and err.value.reason == "empty"


def test_silent_file(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros((22050, 2), np.float32), 22050)
    with pytest.raises(SilentAudioError) as err:
        load(path)
    assert "silence.wav" in str(err.value) and err.value.reason == "silent"


def test_stereo_whose_channels_cancel_is_silent_in_mono_only(tmp_path):
    path = tmp_path / "antiphase.wav"
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
    sf.write(path, np.stack([tone, -tone], 1), 22050, subtype="FLOAT")
    with pytest.raises(SilentAudioError, match="antiphase.wav.*mono mix is silent"):
        load(path)
    assert load(path, mono=False).shape == (2, 22050)


def test_quiet_but_not_silent_file_loads(tmp_path):
    path = tmp_path / "quiet.wav"
    sf.write(path, np.full((100, 1), 4 / 32768, np.float32), 22050, subtype="PCM_16")
    assert np.abs(load(path)).max() > 0


def test_non_finite_samples(tmp_path):
    path = tmp_path / "nan.wav"
    data = np.full((100, 1), 0.1, np.float32)
    data[10] = np.nan
    sf.write(path, data, 22050, subtype="FLOAT")
    with pytest.raises(UnreadableAudioError, match="NaN"):
        load(path)


@pytest.mark.parametrize("name", ["zero.wav", "zero.mp3", "zero.flac"])
def test_zero_byte_file_is_empty_not_unreadable(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="0 bytes") as err:
        load(path)
    assert name in str(err.value) and err.value.reason == "empty"


def test_corrupt_file_message_does_not_claim_it_is_missing(tmp_path):
    path = tmp_path / "corrupt.mp3"
    path.write_bytes(b"\x00garbage" * 200)
    with pytest.raises(UnreadableAudioError) as err:
        load(path)
    assert "corrupt.mp3" in str(err.value) and "not a recognised audio format" in str(err.value)
    assert "does not exist" not in str(err.value)
    with pytest.raises(UnreadableAudioError, match="a folder"):
        load(tmp_path)


def test_a_truncated_file_decodes_as_far_as_it_goes_with_a_note(tmp_path):
    path = tmp_path / "cut.wav"
    _write(path, 22050, 1)
    whole = load(path)
    path.write_bytes(path.read_bytes()[: 44 + len(whole)])  # half the 16-bit samples
    notes: list[str] = []
    x = load(path, notes=notes)
    assert (
        len(x) == len(whole) // 2 and len(notes) == 1 and notes[0].startswith("truncated: the header states")
    )
    notes.clear()
    _write(path, 22050, 1)
    assert len(load(path, notes=notes)) == len(whole) and notes == []  # a whole file: no note


def test_a_header_rate_outside_the_sane_range_is_corrupt(tmp_path):
    path = tmp_path / "one-hertz.wav"
    sf.write(path, np.full((1000, 1), 0.5, np.float32), 22050, subtype="PCM_16")
    b = bytearray(path.read_bytes())
    b[24:28] = (1).to_bytes(4, "little")  # 1 Hz: 1000 samples would resample to 22 million
    path.write_bytes(bytes(b))
    with pytest.raises(UnreadableAudioError, match="one-hertz.wav: the header claims 1 Hz"):
        load(path)
