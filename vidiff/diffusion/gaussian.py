"""Gaussian data x ~ N(μ, Σ), for which the optimal denoiser is exact:
E[x | z_t] = μ + α Σ (α² Σ + σ² I)⁻¹ (z_t − α μ).

Samplers and guidance are checked against it without training anything (tests, benchmarks).
"""

from __future__ import annotations

from typing import Sequence

import torch

from vidiff.diffusion.schedule import alpha_sigma


class GaussianData:
    """x ~ N(mean, cov) for tensors of shape `shape` (mean flattened, cov D×D, D = prod(shape))."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, shape: Sequence[int]):
        self.shape = tuple(shape)
        self.mean = mean.reshape(-1).double()
        self.cov = cov.double()
        evals, self.evecs = torch.linalg.eigh(self.cov)
        self.evals = evals.clamp_min(0.0)

    @staticmethod
    def video(
        channels: int = 1,
        frames: int = 4,
        height: int = 2,
        width: int = 2,
        time_corr: float = 0.9,
        space_corr: float = 0.5,
        seed: int = 0,
    ) -> "GaussianData":
        """A video-shaped Gaussian with correlation ρ^|Δf| across frames and ρ_s^|Δpos| in space."""
        g = torch.Generator().manual_seed(seed)
        f = torch.arange(frames, dtype=torch.float64)
        kt = time_corr ** (f[:, None] - f[None, :]).abs()
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        pos = torch.stack([ys.flatten(), xs.flatten()], 1).double()
        ks = space_corr ** torch.cdist(pos, pos, p=1)
        kc = torch.eye(channels, dtype=torch.float64) * 0.5 + 0.5
        cov = torch.kron(kc, torch.kron(kt, ks)) * 0.25  # layout c f (h w), std 0.5
        mean = 0.3 * torch.randn(channels * frames * height * width, generator=g, dtype=torch.float64)
        return GaussianData(mean, cov, (channels, frames, height, width))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        x = self.mean + (eps * self.evals.sqrt()) @ self.evecs.T
        return x.float().reshape(n, *self.shape)

    def denoise(self, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        """The exact E[x | z_t] for per-example log-SNR (b,)."""
        b = z.shape[0]
        alpha, sigma = alpha_sigma(logsnr.double().reshape(b, 1))
        zc = z.reshape(b, -1).double() - alpha * self.mean
        proj = zc @ self.evecs  # coordinates in Σ's eigenbasis
        gain = alpha * self.evals / (alpha**2 * self.evals + sigma**2)
        x = self.mean + (gain * proj) @ self.evecs.T
        return x.to(z.dtype).reshape(z.shape)

    def conditional(self, index_a: torch.Tensor, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance of x^b | x^a for a boolean mask `index_a` over the flattened dims."""
        ia = index_a.reshape(-1)
        ib = ~ia
        s_aa, s_ab = self.cov[ia][:, ia], self.cov[ia][:, ib]
        s_bb = self.cov[ib][:, ib]
        k = torch.linalg.solve(s_aa, s_ab).T  # Σ_ba Σ_aa⁻¹
        mean = self.mean[ib] + k @ (x_a.reshape(-1).double() - self.mean[ia])
        return mean, s_bb - k @ s_ab
