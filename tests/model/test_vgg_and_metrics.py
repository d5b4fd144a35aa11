"""The VGG16 feature network and perceptual loss (loading torchvision-format weights, the disabled
mode, gradients, state dicts) and the image metrics (SSIM against skimage, PSNR)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torch import nn
from torch.nn import functional as F

from model import metrics
from model.nets import vgg
from model.nets.vgg import LAYERS, PerceptualLoss, VGG16Features, VGGWeightsError, load_vgg16


@pytest.fixture(scope="module")
def vgg_weights(tmp_path_factory):
    """A random torchvision-layout VGG16 state dict (full conv trunk + a few classifier keys) on disk."""
    torch.manual_seed(0)
    state = VGG16Features(last=28).state_dict()
    state["classifier.0.weight"] = torch.randn(8, 4)  # ignored by the loader (real ones are 4096x25088)
    state["classifier.0.bias"] = torch.randn(8)
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(state, path)
    return str(path), state


def _manual_relu2_2(x, s):
    """Independent relu2_2 of x [B, 3, H, W] from the saved tensors."""
    for conv in (0, 2):
        x = F.relu(F.conv2d(x, s[f"features.{conv}.weight"], s[f"features.{conv}.bias"], padding=1))
    x = F.max_pool2d(x, 2)
    for conv in (5, 7):
        x = F.relu(F.conv2d(x, s[f"features.{conv}.weight"], s[f"features.{conv}.bias"], padding=1))
    return x


def test_load_vgg16_matches_manual_features(vgg_weights):
    path, state = vgg_weights
    net = load_vgg16(path)
    assert not net.training and all(not p.requires_grad for p in net.parameters())
    assert len(net.features) == LAYERS["relu4_3"] + 1
    x = torch.rand(1, 3, 32, 32)
    (feat,) = net(x, [LAYERS["relu2_2"]])
    assert feat.shape == (1, 128, 16, 16)
    torch.testing.assert_close(feat, _manual_relu2_2(x, state), rtol=1e-5, atol=1e-5)


def test_load_vgg16_wrapped_and_prefixed(vgg_weights, tmp_path):
    path, state = vgg_weights
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    net = load_vgg16(str(wrapped))
    torch.testing.assert_close(net.features[0].weight, state["features.0.weight"])


def test_load_vgg16_errors(vgg_weights, tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(VGGWeightsError, match="no VGG16 weights at"):
        load_vgg16(missing)
    _, state = vgg_weights
    bad = dict(state)
    bad["features.5.weight"] = torch.zeros(128, 64, 5, 5)
    del bad["features.10.bias"]
    bad_path = tmp_path / "bad.pth"
    torch.save(bad, bad_path)
    with pytest.raises(VGGWeightsError, match=r"features\.5\.weight") as err:
        load_vgg16(str(bad_path))
    assert "features.10.bias" in str(err.value) and str(bad_path) in str(err.value)
    with pytest.raises(VGGWeightsError):  # a given but invalid path is an error, not "disabled"
        PerceptualLoss(missing)


def test_perceptual_loss_disabled_warns_once(monkeypatch):
    monkeypatch.setattr(vgg, "_warned_no_weights", False)
    pred = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses = [PerceptualLoss(None), PerceptualLoss("")]
        values = [loss(pred, torch.rand_like(pred)) for loss in losses]
    ours = [w for w in caught if "perceptual" in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, UserWarning)
    assert "vgg_weights=PATH" in str(ours[0].message)
    for loss, value in zip(losses, values, strict=True):
        assert not loss.enabled
        assert value.dtype == torch.float64 and value.item() == 0.0 and not value.requires_grad


def test_perceptual_loss_with_weights(vgg_weights):
    path, _ = vgg_weights
    loss = PerceptualLoss(path)
    assert loss.enabled and list(loss.parameters()) == [] and loss.state_dict() == {}
    torch.manual_seed(1)
    target = torch.rand(2, 3, 32, 32)
    assert loss(target.clone(), target).item() == 0.0
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    value = loss(pred, target)
    assert value.item() > 0
    value.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.net.parameters())

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(2, 2)
            self.perceptual = PerceptualLoss(path, layers=("relu1_2", "relu2_2"))

    model = Model().double()  # moves/casts the hidden VGG too
    assert set(model.state_dict()) == {"head.weight", "head.bias"}
    assert len(list(model.parameters())) == 2
    assert model.perceptual.net.features[0].weight.dtype == torch.float64
    assert len(model.perceptual.net.features) == LAYERS["relu2_2"] + 1
    assert model.perceptual(pred.double(), target.double()).dtype == torch.float64


def _skimage_ssim(a, b):
    """a, b: [3, H, W] tensors."""
    return structural_similarity(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), channel_axis=-1,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)


def _smooth(rng, h, w):
    """[3, h, w] smooth image in [0, 1]."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [0.5 + 0.4 * np.sin(rng.uniform(2, 8) * xx + rng.uniform(0, 6)) * np.cos(rng.uniform(2, 8) * yy)
             for _ in range(3)]
    return torch.from_numpy(np.stack(chans))


def test_ssim_identical_is_one():
    a = torch.rand(2, 3, 24, 20)
    torch.testing.assert_close(metrics.ssim(a, a), torch.ones(2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_ssim_matches_skimage(kind):
    rng = np.random.default_rng(3)
    if kind == "random":
        a = torch.from_numpy(rng.uniform(size=(2, 3, 40, 33)))
        b = (a + torch.from_numpy(rng.normal(0, 0.2, size=a.shape))).clamp(0, 1)
    else:
        a = torch.stack([_smooth(rng, 40, 33) for _ in range(2)])
        b = (a + 0.05 * torch.stack([_smooth(rng, 40, 33) for _ in range(2)])).clamp(0, 1)
    ours = metrics.ssim(a, b)
    assert ours.shape == (2,)
    expected = torch.tensor([_skimage_ssim(a[i], b[i]) for i in range(2)], dtype=ours.dtype)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(metrics.ssim(a.float(), b.float()), expected.float(), rtol=0, atol=1e-4)
    # per image: each entry equals the SSIM of that image alone
    torch.testing.assert_close(metrics.ssim(a[1:], b[1:]), ours[1:])


def test_ssim_too_small():
    with pytest.raises(ValueError, match="smaller"):
        metrics.ssim(torch.rand(1, 3, 10, 32), torch.rand(1, 3, 10, 32))


def test_psnr_constant_offset():
    target = torch.full((2, 3, 8, 8), 0.5)
    image = target + 0.1
    torch.testing.assert_close(metrics.psnr(image, target), torch.full((2,), 20.0), rtol=0, atol=1e-4)
    noisy = (target + 0.2 * torch.rand(2, 3, 8, 8)).clamp(0, 1)  # against the definition, computed apart
    mse = ((noisy.numpy() - target.numpy()) ** 2).reshape(2, -1).mean(1)
    torch.testing.assert_close(metrics.psnr(noisy, target), torch.tensor(-10 * np.log10(mse), dtype=torch.float32))


def _manual_vgg_taps(x, s):
    """relu1_2 .. relu5_3 of x from the saved tensors, conv by conv (torchvision's vgg16 configuration)."""
    taps, conv, out = [], 0, x
    for block, n_convs in enumerate((2, 2, 3, 3, 3)):
        if block:
            out = F.max_pool2d(out, 2)
            conv += 1  # the pool's index
        for _ in range(n_convs):
            out = F.relu(F.conv2d(out, s[f"features.{conv}.weight"], s[f"features.{conv}.bias"], padding=1))
            conv += 2
        taps.append(out)
    return taps


def test_lpips_matches_its_definition_from_the_weight_files(vgg_weights, tmp_path):
    from model.nets.lpips import CHANNELS, LPIPS, LPIPSWeightsError

    path, state = vgg_weights
    gen = torch.Generator().manual_seed(3)
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for i, c in enumerate(CHANNELS)}
    lin_path = tmp_path / "vgg_lin.pth"
    torch.save(lin, lin_path)
    lpips = LPIPS(path, str(lin_path))
    a, b = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 32, 32, generator=gen)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fa = _manual_vgg_taps((2 * a - 1 - shift) / scale, state)
    fb = _manual_vgg_taps((2 * b - 1 - shift) / scale, state)
    expected = sum(((x / x.norm(dim=1, keepdim=True) - y / y.norm(dim=1, keepdim=True)) ** 2
                    * lin[f"lin{i}.model.1.weight"]).sum(1).mean((1, 2)) for i, (x, y) in enumerate(zip(fa, fb)))
    torch.testing.assert_close(lpips(a, b), expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(lpips(a, a), torch.zeros(2), atol=1e-6)
    torch.save({"lin0.model.1.weight": torch.rand(1, 3, 1, 1)}, tmp_path / "other.pth")
    with pytest.raises(LPIPSWeightsError, match="not an LPIPS VGG weight file"):
        LPIPS(path, str(tmp_path / "other.pth"))
    with pytest.raises(LPIPSWeightsError, match="no LPIPS weights"):
        LPIPS(path, str(tmp_path / "none.pth"))
