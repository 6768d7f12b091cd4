"""Device impulse responses on the log-mel grid: the generic bank, a folder of WAV responses, their mel gains."""

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from asc_search.config import PROFILES
from asc_search.data.impulses import build_ir_bank, generic_irs, ir_bank_from_record, ir_log_gains, read_ir_folder
from asc_search.data.synth_model import DEVICES, device_response
from asc_search.errors import DataError

QUICK = PROFILES["quick"]


def test_a_delay_has_no_colour_and_a_lowpass_darkens_the_high_bands():
    assert np.abs(ir_log_gains(np.array([0.0, 0.0, 1.0]), 16_000, QUICK)).max() < 1e-6
    gains = ir_log_gains(np.array([0.5, 0.5]), 16_000, QUICK)  # |H|^2 = cos^2(pi f / fs): 0 dB at DC, -inf at 8 kHz
    assert gains.shape == (40,) and abs(gains.mean()) < 1e-5  # centred
    assert np.all(np.diff(gains) < 0)  # falls band after band
    # the band gain is the band's weighted mean of |H|^2: checked for a band in the middle against the formula
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(513, 0.0, 8000.0, 40, 16_000).numpy()
    f = np.fft.rfftfreq(1024, 1 / 16_000)
    want = np.log((np.cos(np.pi * f / 16_000) ** 2) @ fb / fb.sum(0))
    np.testing.assert_allclose(gains, want - want.mean(), atol=1e-4)


def test_the_generic_bank_is_seeded_and_not_the_synthetic_devices():
    a, b = build_ir_bank(QUICK, seed=0), build_ir_bank(QUICK, seed=0)
    assert a.log_gains.shape == (64, 40) and a.fingerprint == b.fingerprint and np.array_equal(a.log_gains, b.log_gains)
    assert build_ir_bank(QUICK, seed=1).fingerprint != a.fingerprint
    assert a.to_record()["source"] == "generic" and a.to_record()["n_irs"] == 64
    spread = a.log_gains.std(axis=0)
    assert spread.mean() > 0.3  # the responses differ from each other: they colour clips, not just shift them
    # no generic response is a copy of one of the synthetic data set's devices (that would leak the unseen ones):
    # the nearest stays > 0.5 dB mean band distance away from every device (about 1 dB from the unseen s5)
    f = np.fft.rfftfreq(QUICK.n_fft, 1 / QUICK.sample_rate)
    for name, device in DEVICES.items():
        dev = ir_log_gains(np.fft.fftshift(np.fft.irfft(device_response(device, np.maximum(f, 1.0)))), 16_000, QUICK)
        assert np.abs(a.log_gains - dev).mean(axis=1).min() > (0.2 if name in ("s4", "s5", "s6") else 0.12), name
    assert all(len(ir) == 129 for ir in generic_irs(16_000, 3))  # 8 ms at 16 kHz, odd (linear phase)


def test_a_folder_of_wav_responses_at_any_rate(tmp_path):
    sf.write(tmp_path / "lowpass.wav", np.array([0.5, 0.5, 0.0, 0.0]), 16_000)
    sf.write(tmp_path / "stereo48k.wav", np.array([[1.0, 0.0], [0.0, 1.0]] + [[0.0, 0.0]] * 30), 48_000)
    (tmp_path / "notes.txt").write_text("not a response")
    found = read_ir_folder(tmp_path)
    assert [n for n, _, _ in found] == ["lowpass.wav", "stereo48k.wav"] and found[1][2] == 48_000
    bank = build_ir_bank(QUICK, tmp_path)
    assert bank.log_gains.shape == (2, 40) and bank.source == str(tmp_path.resolve()) and bank.seed is None
    np.testing.assert_allclose(bank.log_gains[0], ir_log_gains(np.array([0.5, 0.5]), 16_000, QUICK), atol=1e-5)
    # the record rebuilds the same bank; a changed folder is refused by its fingerprint
    assert ir_bank_from_record(bank.to_record(), QUICK).fingerprint == bank.fingerprint
    sf.write(tmp_path / "lowpass.wav", np.array([0.2, 0.8]), 16_000)
    with pytest.raises(DataError, match="fingerprint"):
        ir_bank_from_record(bank.to_record(), QUICK)


def test_bad_response_folders_are_named(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        read_ir_folder(tmp_path / "absent")
    with pytest.raises(DataError, match="no .wav"):
        read_ir_folder(tmp_path)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really")
    with pytest.raises(DataError, match="broken.wav: not an audio file"):
        read_ir_folder(tmp_path)
    (tmp_path / "broken.wav").unlink()
    sf.write(tmp_path / "silent.wav", np.zeros(16), 16_000)
    with pytest.raises(DataError, match="silent.wav: .*not all-zero"):
        read_ir_folder(tmp_path)


def test_the_bank_follows_the_profile():
    small = dataclasses.replace(QUICK, name="tiny", n_mels=16)
    assert build_ir_bank(small).log_gains.shape == (64, 16) and build_ir_bank(small).profile == "tiny"
