"""The peer for `s2f bench train`: the same voice encoder and training step in PyTorch (optional).

Same layers (paper Table 1, from the config), same STFT geometry and power law, same loss and
Adam. Settings: float32 or bfloat16 autocast, NCHW or channels_last (oneDNN's preferred CPU layout);
`s2f bench train` times all of them and compares with the fastest. Imported only when torch is
installed.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from s2f_tf.app.bench import timed
from s2f_tf.models.voice_encoder import _POOL_AFTER, _STRIDE2, frequency_bins_out, scaled_channels


class TorchVoiceEncoder(nn.Module):
    def __init__(self, config, channels_last: bool = True):
        super().__init__()
        self.channels_last = channels_last
        v, a = config.voice_encoder, config.audio
        channels = scaled_channels(v.channels, v.width)
        pad = 0 if v.padding == "valid" else "same"
        self.convs, self.norms = nn.ModuleList(), nn.ModuleList()
        prev = 2
        for i, c in enumerate(channels):
            stride = 2 if i in _STRIDE2 else 1
            self.convs.append(
                nn.Conv2d(prev, c, v.kernel_size, stride=stride, padding=pad if stride == 1 else 0)
            )
            self.norms.append(nn.BatchNorm2d(c) if i < 8 else nn.BatchNorm1d(c))
            prev = c
        bins = frequency_bins_out(a.num_bins, v.kernel_size, v.padding)
        self.fc10 = nn.Linear(bins * channels[-1], v.fc_units)
        self.fc11 = nn.Linear(v.fc_units, config.feature_dim)
        self.register_buffer(
            "window", torch.hann_window(a.window_samples, periodic=a.periodic_window)
        )
        self.a = a
        self.same = v.padding == "same"
        self.kernel = v.kernel_size

    def _conv(self, i, x):
        """TF 'same' for stride 2 pads asymmetrically (more at the end); do the same here."""
        if self.same and i in _STRIDE2:
            pads = []
            for n in (x.shape[3], x.shape[2]):  # F.pad order: last dim first
                total = max((-(-n // 2) - 1) * 2 + self.kernel - n, 0)
                pads += [total // 2, total - total // 2]
            x = nn.functional.pad(x, pads)
        return self.convs[i](x)

    def forward(self, wave):
        a = self.a
        frames = wave.unfold(1, a.window_samples, a.hop_samples) * self.window  # [B, T, W]
        spec = torch.fft.rfft(frames, n=a.fft_length)[..., : a.num_bins]  # [B, T, F]
        x = torch.stack([spec.real, spec.imag], dim=1)  # [B, 2, T, F]
        x = torch.sign(x) * x.abs().pow(0.3)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i in range(8):
            x = self.norms[i](torch.relu(self._conv(i, x)))
            if i in _POOL_AFTER:
                x = nn.functional.max_pool2d(x, (2, 1))
        x = self._conv(8, x).mean(dim=2)  # [B, C, F']
        x = self.norms[8](torch.relu(x)).flatten(1)
        return self.fc11(torch.relu(self.fc10(x)))


def make_step(config, batch_size: int, setting: str):
    """One training step of the peer in `setting` (float32 | bfloat16, optionally _channels_last), on
    the first CUDA GPU when PyTorch sees one (where TensorFlow's step runs too), else the CPU."""
    channels_last = setting.endswith("_channels_last")
    bf16 = setting.startswith("bfloat16")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = TorchVoiceEncoder(config, channels_last).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    # fused: one kernel per parameter, as our own Adam (s2f_tf/train/trainer.py, FusedAdam)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999), eps=1e-4, fused=True)
    wave = torch.from_numpy(
        (np.random.RandomState(0).randn(batch_size, config.audio.clip_samples) * 0.1).astype(
            np.float32
        )
    ).to(device)
    target = torch.from_numpy(
        np.random.RandomState(1).randn(batch_size, config.feature_dim).astype(np.float32)
    ).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            pred = model(wave)
        t = nn.functional.normalize(target, dim=-1)
        p = nn.functional.normalize(pred.float(), dim=-1)
        loss = ((t - p) ** 2).sum(-1).mean()
        loss.backward()
        opt.step()
        return float(loss.detach())  # waits for the device

    return step


def main() -> None:
    """python -m s2f_tf.app.bench_torch CONFIG_JSON BATCH; then one line 'SETTING STEPS WARMUP' per
    measurement on stdin, the seconds on stdout (its own process, so TensorFlow's thread pools cannot
    disturb the timing; kept running so the caller can interleave)."""
    import json
    import sys
    import warnings

    from s2f_tf.configs import from_dict

    # 'same' padding with the 4x4 kernels (demo, tiny) makes PyTorch pad a copy; it says so per layer
    warnings.filterwarnings("ignore", message="Using padding='same' with even kernel lengths")
    config = from_dict(json.loads(sys.argv[1]))
    batch_size = int(sys.argv[2])
    torch.set_num_threads(max(1, torch.get_num_threads()))
    steps_by_setting = {}
    for line in sys.stdin:
        setting, steps, warmup = line.split()
        if setting not in steps_by_setting:
            steps_by_setting[setting] = make_step(config, batch_size, setting)
        print(timed(steps_by_setting[setting], int(steps), int(warmup)), flush=True)


if __name__ == "__main__":
    main()
