"""Classifier-free guidance and conditional training, checked on exact Gaussian denoisers."""

import pytest
import torch

from vidiff.conditioning import ClassConditioning, ConditioningConfig, TextConditioning
from vidiff.diffusion.gaussian import GaussianData
from vidiff.diffusion.guidance import classifier_free_guidance
from vidiff.diffusion.process import Denoiser, eps_from_x
from vidiff.diffusion.sampling import initial_noise, logsnr_grid, sample_ancestral, sample_ddim, sample_pc
from vidiff.diffusion.schedule import alpha_sigma
from vidiff.presets import get_preset
from vidiff.train import JointImageVideo, train

NULL_CLASS = ClassConditioning(ConditioningConfig(kind="class"), num_classes=2).null


class TwoClassGaussian:
    """p(x | c) = N(μ_c, Σ), p(c) = ½; the unconditional E[x | z] mixes the two by their posterior."""

    def __init__(self):
        base = GaussianData.video(channels=1, frames=3, height=2, width=2, time_corr=0.8)
        d = base.mean.numel()
        self.shape = base.shape
        direction = torch.linspace(-1, 1, d, dtype=torch.float64)
        self.classes = [
            GaussianData(base.mean - 0.4 * direction, base.cov, base.shape),
            GaussianData(base.mean + 0.4 * direction, base.cov, base.shape),
        ]
        self.direction = direction / direction.norm()

    def _log_lik(self, g, z, logsnr):
        a, s = alpha_sigma(logsnr.double().reshape(-1, 1))
        zc = z.reshape(z.shape[0], -1).double() - a * g.mean
        proj = zc @ g.evecs
        var = a**2 * g.evals + s**2
        return -0.5 * (proj**2 / var + var.log()).sum(1)

    def denoise(self, z, logsnr, class_labels):
        cond = torch.stack([g.denoise(z, logsnr) for g in self.classes])  # 2 b ...
        ll = torch.stack([self._log_lik(g, z, logsnr) for g in self.classes])  # 2 b
        w = torch.softmax(ll, 0).to(z.dtype).reshape(2, -1, *([1] * (z.ndim - 1)))
        uncond = (w * cond).sum(0)
        picked = cond[class_labels.clamp_min(0), torch.arange(z.shape[0])]
        is_null = (class_labels < 0).reshape(-1, *([1] * (z.ndim - 1)))
        return torch.where(is_null, uncond, picked)


@pytest.fixture(scope="module")
def mix():
    return TwoClassGaussian()


def test_guidance_zero_samples_the_conditional(mix):
    n = 4000
    g = torch.Generator().manual_seed(0)
    labels = torch.ones(n, dtype=torch.long)
    x = sample_ancestral(
        classifier_free_guidance(mix.denoise, 0.0, NULL_CLASS),
        initial_noise((n, *mix.shape), g),
        logsnr_grid(128),
        gamma=0.3,
        noise=g,
        cond={"class_labels": labels},
    )
    err = (x.reshape(n, -1).double().mean(0) - mix.classes[1].mean).abs().max()
    assert err < 0.04, f"w=0 mean error {err:.4f}"


@pytest.mark.parametrize("sampler", [sample_ancestral, sample_pc, sample_ddim])
def test_guidance_pushes_away_from_other_class(mix, sampler):
    n = 1500
    proj = []
    for w in (0.0, 1.0, 3.0):
        g = torch.Generator().manual_seed(1)
        x = sampler(
            classifier_free_guidance(mix.denoise, w, NULL_CLASS),
            initial_noise((n, *mix.shape), g),
            logsnr_grid(48),
            noise=g,
            cond={"class_labels": torch.ones(n, dtype=torch.long)},
        )
        proj.append((x.reshape(n, -1).double().mean(0) @ mix.direction).item())
    assert proj[0] < proj[1] < proj[2], f"class-1 projection should grow with w: {proj}"


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_guided_x_equals_guided_eps_for_every_parameterisation(prediction):
    """ε̃ = (1 + w) ε̂(z, c) − w ε̂(z): combining x̂ with the same weights is exactly that."""
    torch.manual_seed(0)
    table = torch.randn(3, 1, 2, 4, 4)  # a 'network' whose output depends on the class

    class Net(torch.nn.Module):
        def forward(self, z, logsnr, class_labels):
            return z * 0.3 + table[class_labels.clamp_min(-1) + 1]

    den = Denoiser(Net(), prediction)
    z, lam, c = torch.randn(2, 1, 2, 4, 4), torch.tensor([-2.0, 3.0]), torch.tensor([0, 1])
    w = 2.5
    guided_x = classifier_free_guidance(den, w, NULL_CLASS)(z, lam, class_labels=c)
    _, eps_c = den.predict(z, lam, class_labels=c)
    _, eps_u = den.predict(z, lam, class_labels=torch.full_like(c, -1))
    assert torch.allclose(eps_from_x(z, guided_x, lam), (1 + w) * eps_c - w * eps_u, atol=1e-4)


def test_null_condition_of_each_kind():
    cond = {"class_labels": torch.tensor([2, 0])}
    null = NULL_CLASS(cond)
    assert (null["class_labels"] == -1).all() and (cond["class_labels"] == torch.tensor([2, 0])).all()
    text = {"text_mask": torch.ones(2, 3, dtype=torch.bool), "text_tokens": torch.randn(2, 3, 4)}
    null = TextConditioning(ConditioningConfig(kind="text")).null(text)
    assert not null["text_mask"].any() and torch.equal(null["text_tokens"], text["text_tokens"])


def test_class_conditional_training_and_guided_sampling(tmp_path):
    cfg = get_preset("cpu-tiny").override(
        ["conditioning.kind=class", "train.steps=3", "train.num_samples=2", "sample.steps=2"]
    )
    train(cfg, tmp_path / "run", progress=False)
    from vidiff import VideoDiffusion

    model = VideoDiffusion.from_pretrained(tmp_path / "run")
    assert model.config.model.num_classes == 12 and model.classes[0] == "red circle"
    v = model.sample(2, class_label=[0, 5], guidance=2.0, steps=2)
    assert v.shape == (2, 3, 4, 16, 16)
    with pytest.raises(ValueError, match="class-conditional"):
        model.sample(1, steps=2)
    with pytest.raises(ValueError, match="out of range"):
        model.sample(1, class_label=99, steps=2)


def test_joint_image_video_items_and_training(tmp_path):
    from vidiff.data import MovingShapes

    ds = JointImageVideo(MovingShapes(num_videos=10, frames=4, size=16), 3)
    item = ds[0]
    assert item["video"].shape == (3, 7, 16, 16)
    assert torch.equal(item["video"][:, :4], MovingShapes(num_videos=10, frames=4, size=16)[0]["video"])
    cfg = get_preset("cpu-tiny").override(
        ["data.image_frames=2", "train.steps=2", "sample.steps=2", "train.num_samples=1"]
    )
    out = train(cfg, tmp_path / "joint", progress=False)
    assert out["step"] == 2


def test_text_conditional_training_and_prompted_sampling(tmp_path):
    pytest.importorskip("transformers")
    cfg = get_preset("cpu-tiny").override(
        ["conditioning.kind=text", "train.steps=2", "train.num_samples=1", "sample.steps=2", "train.save_every=0"]
    )
    train(cfg, tmp_path / "run", progress=False)
    from vidiff import VideoDiffusion

    model = VideoDiffusion.from_pretrained(tmp_path / "run")
    assert model.config.model.text_dim == 384
    v = model.sample(2, prompt=["a red circle moving left", "a blue square moving up"], guidance=3.0, steps=2)
    assert v.shape == (2, 3, 4, 16, 16) and torch.isfinite(v).all()
    with pytest.raises(ValueError, match="text-conditional"):
        model.sample(1, steps=2)
