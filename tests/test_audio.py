"""Front end vs the numpy reference: eagerly, in tf.function, in tf.data; tiling; dtypes; errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import spectrogram_numpy

from s2f_tf.frontend import SpectrogramFrontEnd, num_frames, tile_to_length
from s2f_tf.recording import MFCC_HOP_SAMPLES, mfcc_frames

TOL = dict(atol=2e-3, rtol=2e-3)  # float32 FFT vs float64 numpy, after the 0.3 power law


def _wave(batch=2, n=1600, seed=0):
    return (np.random.RandomState(seed).randn(batch, n) * 0.1).astype(np.float32)


def _small(**kw):
    args = dict(tile_to_samples=1600, min_samples=400, max_samples=16000)
    args.update(kw)
    return SpectrogramFrontEnd(**args)


def test_paper_geometry():
    assert num_frames(96000, 400, 160) == 598
    fe = SpectrogramFrontEnd()
    out = fe(np.zeros((1, 96000), np.float32))
    assert out.shape == (1, 598, 257, 2)
    assert fe.compute_output_shape((None, 96000)) == (None, 598, 257, 2)


def test_matches_numpy_eager_and_function():
    x = _wave()
    ref = spectrogram_numpy(x, tile_to_samples=1600)
    fe = _small()
    np.testing.assert_allclose(fe(x).numpy(), ref, **TOL)
    np.testing.assert_allclose(tf.function(fe)(x).numpy(), ref, **TOL)
    assert ref.shape == (2, num_frames(1600, 400, 160), 257, 2)


def test_matches_numpy_in_tf_data():
    x = _wave(batch=4)
    fe = _small()
    ds = tf.data.Dataset.from_tensor_slices(x).batch(2).map(fe)
    got = np.concatenate([b.numpy() for b in ds])
    np.testing.assert_allclose(got, spectrogram_numpy(x, tile_to_samples=1600), **TOL)


def test_int16_pcm_is_scaled():
    x = _wave()
    pcm = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    fe = _small()
    np.testing.assert_allclose(fe(pcm).numpy(), spectrogram_numpy(pcm, tile_to_samples=1600), **TOL)
    np.testing.assert_allclose(
        fe(pcm).numpy(), fe(pcm.astype(np.float32) / 32768).numpy(), atol=1e-5
    )


def test_short_clips_are_tiled():
    x = _wave(n=700)
    fe = _small()
    out = fe(x).numpy()
    tiled = np.tile(x, (1, 3))[:, :1600]
    np.testing.assert_allclose(out, spectrogram_numpy(tiled), **TOL)
    # dynamic length inside tf.function gives the same
    f = tf.function(fe, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    np.testing.assert_allclose(f(x).numpy(), out, atol=1e-5)
    # longer clips pass untouched
    long = _wave(n=2000)
    assert fe(long).shape[1] == num_frames(2000, 400, 160)


def test_tile_to_length_dynamic():
    f = tf.function(lambda w: tile_to_length(w, 10), input_signature=[tf.TensorSpec([None, None])])
    np.testing.assert_array_equal(
        f(tf.constant([[1.0, 2.0, 3.0]])).numpy(), [[1, 2, 3, 1, 2, 3, 1, 2, 3, 1]]
    )
    np.testing.assert_array_equal(f(tf.ones([1, 12])).shape, [1, 12])


def test_power_law_and_window():
    fe = _small(power=1.0)
    x = _wave()
    np.testing.assert_allclose(
        fe(x).numpy(), spectrogram_numpy(x, power=1.0, tile_to_samples=1600), atol=1e-3, rtol=1e-3
    )
    # periodic Hann == scipy's get_window('hann', fftbins=True)
    from scipy.signal import get_window

    np.testing.assert_allclose(fe._window.numpy(), get_window("hann", 400, fftbins=True), atol=1e-6)


@pytest.mark.parametrize("name", ["mixed_float16", "mixed_bfloat16"])
def test_float32_under_mixed_precision(policy, name):
    policy(name)
    fe = _small()
    out = fe(_wave())
    assert out.dtype == tf.float32
    assert fe.compute_dtype == "float32"


def test_get_config_round_trip():
    fe = _small(power=0.5, validate=False)
    clone = SpectrogramFrontEnd.from_config(fe.get_config())
    assert clone.get_config() == fe.get_config()
    x = _wave()
    np.testing.assert_allclose(clone(x).numpy(), fe(x).numpy())
    assert (
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fe)).power == 0.5
    )


def test_bad_input_errors():
    fe = _small()
    with pytest.raises(ValueError, match="rank 2"):
        fe(np.zeros((2, 3, 1600), np.float32))
    with pytest.raises(ValueError, match="rank 2"):
        fe(np.zeros((1600,), np.float32))
    with pytest.raises(ValueError, match="empty"):
        fe(np.zeros((1, 0), np.float32))
    with pytest.raises(ValueError, match="too short"):
        fe(np.zeros((1, 100), np.float32))
    with pytest.raises(ValueError, match="too long"):
        fe(np.zeros((1, 16001), np.float32))
    with pytest.raises(ValueError, match="dtype"):
        fe(np.zeros((1, 1600), np.int32))
    bad = _wave()
    bad[0, 5] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        fe(bad)
    bad[0, 5] = np.inf
    f = tf.function(fe, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or Inf"):
        f(bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="too short"):
        f(np.zeros((1, 100), np.float32))
    with pytest.raises(ValueError, match="fft_length"):
        SpectrogramFrontEnd(fft_length=256)


def test_band_limit_keeps_lowest_bins():
    x = _wave()
    fe = _small(max_bins=129)
    out = fe(x).numpy()
    assert out.shape[2] == 129
    np.testing.assert_allclose(out, spectrogram_numpy(x, tile_to_samples=1600, max_bins=129), **TOL)
    assert SpectrogramFrontEnd.from_config(fe.get_config()).max_bins == 129
    with pytest.raises(ValueError, match="max_bins"):
        _small(max_bins=300)


def test_mfcc_frames_in_chunks_are_the_frames_at_once():
    rng = np.random.default_rng(0)
    pcm = (rng.normal(0, 3000, 16000 * 3 + 123)).astype(np.int16)
    whole = mfcc_frames(pcm, chunk_frames=10**6)
    assert whole.shape == (num_frames(len(pcm), 400, MFCC_HOP_SAMPLES), 12)
    for chunk in (1, 7, 100, len(whole) - 1):
        np.testing.assert_allclose(
            mfcc_frames(pcm, chunk_frames=chunk), whole, rtol=1e-5, atol=1e-4
        )
    assert mfcc_frames(pcm[:399]).shape == (0, 12) and mfcc_frames(pcm[:400]).shape == (1, 12)


@pytest.mark.parametrize("suffix", [".wav", ".m4a"])  # soundfile's blocks; ffmpeg's pipe
def test_audio_decoded_a_block_at_a_time_is_the_whole(tmp_path, suffix):
    """decode_blocks (and open_audio's temporary file) give load_audio's samples, whatever the block:
    channels averaged, resampled by soxr's stream, for a 44.1 kHz stereo file."""
    import soundfile

    from s2f_tf.media import audio

    t = np.arange(44100 * 3) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 97 * t)], 1)
    path = str(tmp_path / f"a{suffix}")
    if suffix == ".wav":
        soundfile.write(path, stereo.astype(np.float32), 44100, subtype="FLOAT")
    else:
        import subprocess

        wav = str(tmp_path / "src.wav")
        soundfile.write(wav, stereo.astype(np.float32), 44100, subtype="FLOAT")
        cmd = [audio.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-i", wav, "-c:a", "aac", path]
        subprocess.run(cmd, check=True)
    whole = audio.load_audio(path)
    assert abs(whole.size - 48000) < 2000 and whole.dtype == np.int16
    for seconds in (0.1, 0.7, 100.0):
        blocks = list(audio.decode_blocks(path, block_seconds=seconds))
        np.testing.assert_array_equal(np.concatenate(blocks), whole)
    with audio.open_audio(path) as pcm:
        assert pcm.size == whole.size
        np.testing.assert_array_equal(pcm.read(0, pcm.size), whole)
        np.testing.assert_array_equal(pcm.read(100, 1000), whole[100:1000])
        assert pcm.read(pcm.size, pcm.size + 10).size == 0
