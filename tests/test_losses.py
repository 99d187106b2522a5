"""Tests of the multi-level contrastive losses against naive oracles written from docs/method.md section 2."""

from __future__ import annotations

import functools
import math

import pytest
import torch

import afloc.modeling.losses as losses_module
from afloc.modeling.config import LossConfig
from afloc.modeling.losses import AFLocLoss, global_contrastive_loss, local_contrastive_loss
from afloc.modeling.types import ImageEncoderOutput, TextEncoderOutput


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The tensors here are tiny: intra-op threads only add overhead (and stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------------
# Naive oracles: Python loops over every (image j, text i) pair and, for text i, only its valid tokens.
# ----------------------------------------------------------------------------------------------------------


def _cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return torch.dot(a, b) / torch.clamp(a.norm() * b.norm(), min=eps)


def _symmetric_ce(similarity: torch.Tensor) -> torch.Tensor:
    """CE(S, diag) + CE(S^T, diag) with mean reduction; ``similarity[j, i]`` = image j, text i."""
    batch = similarity.shape[0]
    image_to_text = -torch.stack([torch.log_softmax(similarity[k], dim=0)[k] for k in range(batch)]).mean()
    text_to_image = -torch.stack([torch.log_softmax(similarity[:, k], dim=0)[k] for k in range(batch)]).mean()
    return image_to_text + text_to_image


def reference_local_score(
    regions: torch.Tensor, tokens: torch.Tensor, gamma1: float, gamma2: float, null: bool = False
) -> torch.Tensor:
    """``R(i, j)`` of image (``regions`` = V_j, ``[D, N]``) and text (``tokens`` = Q_i, ``[D, T_i]``).

    ``null``: step 2's softmax also has a "no token" column of logit 0, dropped after the softmax.
    """
    attention = regions.t() @ tokens  # 1. A = V^T Q, [N, T_i]
    if null:
        attention = torch.cat([attention, attention.new_zeros(attention.shape[0], 1)], dim=1)
    attention = torch.softmax(attention, dim=1)  # 2. softmax over tokens, per region
    if null:
        attention = attention[:, :-1]
    alpha = torch.softmax(gamma1 * attention, dim=0)  # 3. softmax over regions, per token
    similarities = []
    for t in range(tokens.shape[1]):
        context = (alpha[:, t].unsqueeze(0) * regions).sum(dim=1)  # 4. c_t = sum_n alpha[n, t] V[:, n]
        similarities.append(_cosine(tokens[:, t], context))  # 5. s_t = cos(Q_t, c_t)
    return torch.logsumexp(gamma2 * torch.stack(similarities), dim=0)  # 6. log sum_t exp(gamma2 s_t)


def reference_local_loss(
    patches: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
    null: bool = False,
) -> torch.Tensor:
    """Spec section 2, local loss, evaluated pair by pair in the dtype of the inputs."""
    num_images, num_texts = patches.shape[0], tokens.shape[0]
    rows = []
    for j in range(num_images):
        regions = patches[j].reshape(patches.shape[1], -1)  # V_j, [D, N]
        row = []
        for i in range(num_texts):
            valid = [t for t in range(tokens.shape[1]) if bool(mask[i, t])]
            text = torch.stack([tokens[i, t] for t in valid], dim=1)  # Q_i, [D, T_i], valid tokens only
            row.append(gamma3 * reference_local_score(regions, text, gamma1, gamma2, null))  # 7. S[j, i]
        rows.append(torch.stack(row))
    return _symmetric_ce(torch.stack(rows))


def reference_global_loss(images: torch.Tensor, reports: torch.Tensor, gamma3: float = 10.0) -> torch.Tensor:
    batch = images.shape[0]
    similarity = torch.stack(
        [torch.stack([gamma3 * _cosine(images[j], reports[i]) for i in range(batch)]) for j in range(batch)]
    )
    return _symmetric_ce(similarity)


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


def _random_mask(generator: torch.Generator, batch: int, length: int, contiguous: bool) -> torch.Tensor:
    """Variable-length rows; row 0 always has a single valid token, every row at least one."""
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        if b == 0:
            count = 1
        else:
            count = int(torch.randint(1, length + 1, (1,), generator=generator))
        if contiguous:
            mask[b, :count] = True
        else:
            mask[b, torch.randperm(length, generator=generator)[:count]] = True
    return mask


def _random_inputs(
    seed: int, batch: int, dim: int, grid: tuple[int, int], length: int, contiguous: bool, padding: str = "garbage"
):
    generator = torch.Generator().manual_seed(seed)
    patches = torch.randn(batch, dim, *grid, generator=generator, dtype=torch.float64)
    tokens = torch.randn(batch, length, dim, generator=generator, dtype=torch.float64)
    mask = _random_mask(generator, batch, length, contiguous)
    if padding == "zeros":
        tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0)
    else:  # large garbage in the padding: must not leak into the result
        garbage = 100.0 * torch.randn(batch, length, dim, generator=generator, dtype=torch.float64)
        tokens = torch.where(mask.unsqueeze(-1), tokens, garbage)
    return patches, tokens, mask


def _leaf(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.detach().to(dtype).clone().requires_grad_(True)


# ----------------------------------------------------------------------------------------------------------
# Local loss vs oracle
# ----------------------------------------------------------------------------------------------------------

LOCAL_CASES = [
    # seed, batch, dim, grid, tokens, contiguous mask, padding, (gamma1, gamma2, gamma3)
    (0, 4, 8, (3, 3), 5, True, "zeros", (4.0, 5.0, 10.0)),
    (1, 5, 6, (2, 4), 7, False, "garbage", (2.5, 3.0, 7.0)),
    (2, 3, 16, (4, 3), 4, True, "garbage", (1.0, 0.5, 20.0)),
    (3, 6, 5, (1, 5), 3, False, "zeros", (6.0, 2.0, 3.0)),
]


@functools.cache
def _oracle_case(index: int):
    """Inputs, loss and gradients of the float64 oracle for ``LOCAL_CASES[index]`` (computed once)."""
    seed, batch, dim, grid, length, contiguous, padding, (g1, g2, g3) = LOCAL_CASES[index]
    patches, tokens, mask = _random_inputs(seed, batch, dim, grid, length, contiguous, padding)
    # scale so that attention logits are O(1..10): exercises non-trivial softmaxes in both directions
    patches = patches * 0.7
    p_ref, t_ref = _leaf(patches, torch.float64), _leaf(tokens, torch.float64)
    expected = reference_local_loss(p_ref, t_ref, mask, g1, g2, g3)
    grad_p_ref, grad_t_ref = torch.autograd.grad(expected, (p_ref, t_ref))
    return patches, tokens, mask, expected.detach(), grad_p_ref, grad_t_ref


@pytest.mark.parametrize("chunk", [None, 1, 3])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("index", range(len(LOCAL_CASES)), ids=[f"case{c[0]}" for c in LOCAL_CASES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_local_loss_matches_oracle(index, chunk, recompute, dtype):
    g1, g2, g3 = LOCAL_CASES[index][-1]
    patches, tokens, mask, expected, grad_p_ref, grad_t_ref = _oracle_case(index)
    p, t = _leaf(patches, dtype), _leaf(tokens, dtype)
    actual = local_contrastive_loss(
        p,
        t,
        mask,
        attention_temperature=g1,
        aggregation_temperature=g2,
        logit_scale=g3,
        text_chunk_size=chunk,
        recompute=recompute,
    )
    grad_p, grad_t = torch.autograd.grad(actual, (p, t))

    assert actual.ndim == 0
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-6)
    grad_scale_p = grad_p_ref.abs().max().item()
    grad_scale_t = grad_t_ref.abs().max().item()
    torch.testing.assert_close(grad_p.double(), grad_p_ref, rtol=1e-4, atol=1e-5 * grad_scale_p)
    torch.testing.assert_close(grad_t.double(), grad_t_ref, rtol=1e-4, atol=1e-5 * grad_scale_t)
    # padding tokens take no part at all: exactly zero gradient
    assert torch.all(grad_t[~mask] == 0)


def test_local_loss_auto_chunking_matches_oracle(monkeypatch):
    """``text_chunk_size=None`` with a tiny element budget forces several automatic chunks."""
    patches, tokens, mask = _random_inputs(7, 5, 6, (3, 3), 4, contiguous=True)
    monkeypatch.setattr(losses_module, "_CHUNK_ELEMENTS", 2 * 5 * 9 * 4)  # two texts per chunk (5 = 2+2+1)
    p, t = _leaf(patches, torch.float64), _leaf(tokens, torch.float64)
    expected = reference_local_loss(p, t, mask)
    grads_ref = torch.autograd.grad(expected, (p, t))
    for recompute in (False, True):
        actual = local_contrastive_loss(p, t, mask, recompute=recompute)
        grads = torch.autograd.grad(actual, (p, t))
        torch.testing.assert_close(actual.double(), expected.detach(), rtol=1e-5, atol=1e-6)
        for g, g_ref in zip(grads, grads_ref, strict=True):
            torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5 * g_ref.abs().max().item())


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("recompute", [False, True])
def test_null_attention_matches_oracle(chunk, recompute):
    """The "no token" slot (LossConfig.null_attention): loss and gradients equal the oracle's, padding included."""
    patches, tokens, mask = _random_inputs(5, 4, 6, (3, 2), 5, contiguous=False)
    p, t = _leaf(patches * 0.7, torch.float64), _leaf(tokens, torch.float64)
    expected = reference_local_loss(p, t, mask, null=True)
    grads_ref = torch.autograd.grad(expected, (p, t))
    actual = local_contrastive_loss(p, t, mask, text_chunk_size=chunk, recompute=recompute, null_attention=True)
    grads = torch.autograd.grad(actual, (p, t))
    torch.testing.assert_close(actual, expected.detach(), rtol=1e-6, atol=1e-8)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-7 * g_ref.abs().max().item())
    # the slot changes the loss: with it off, the oracle without the slot is matched instead
    plain = local_contrastive_loss(p, t, mask, text_chunk_size=chunk)
    assert not torch.isclose(plain, actual, rtol=1e-4)
    torch.testing.assert_close(plain, reference_local_loss(p, t, mask).detach(), rtol=1e-6, atol=1e-8)


def test_null_attention_is_finite_for_negative_regions():
    """Regions whose dot with every token is very negative (the slot takes all attention) stay finite."""
    patches, tokens, mask = _random_inputs(9, 3, 4, (2, 2), 3, contiguous=True)
    tokens = tokens.abs()
    patches = -patches.abs() * 50  # every region-token dot product strongly negative: the slot takes it all
    value = local_contrastive_loss(patches.requires_grad_(), tokens, mask, null_attention=True)
    (grad,) = torch.autograd.grad(value, patches)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert LossConfig().null_attention is False  # the reference is the default


def test_local_loss_default_temperatures_match_spec():
    """Defaults are gamma1 = 4, gamma2 = 5, gamma3 = 10."""
    patches, tokens, mask = _random_inputs(11, 3, 4, (2, 2), 3, contiguous=True)
    expected = reference_local_loss(patches, tokens, mask, 4.0, 5.0, 10.0)
    torch.testing.assert_close(local_contrastive_loss(patches, tokens, mask).double(), expected, rtol=1e-5, atol=1e-6)


def test_local_loss_no_grad_and_recompute():
    patches, tokens, mask = _random_inputs(12, 4, 6, (2, 3), 5, contiguous=False)
    expected = reference_local_loss(patches, tokens, mask)
    with torch.no_grad():
        for recompute in (False, True):
            actual = local_contrastive_loss(
                patches.float(), tokens.float(), mask, text_chunk_size=2, recompute=recompute
            )
            torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-6)


def test_local_loss_bfloat16_close_to_float32():
    patches, tokens, mask = _random_inputs(13, 4, 16, (3, 3), 6, contiguous=True, padding="zeros")
    patches, tokens = patches.float() * 0.3, tokens.float() * 0.3
    p16, t16 = _leaf(patches, torch.bfloat16), _leaf(tokens, torch.bfloat16)
    loss16 = local_contrastive_loss(p16, t16, mask, text_chunk_size=2)
    grads16 = torch.autograd.grad(loss16, (p16, t16))
    loss32 = local_contrastive_loss(patches, tokens, mask)
    assert torch.isfinite(loss16) and all(torch.isfinite(g).all() for g in grads16)
    assert abs(loss16.item() - loss32.item()) < 0.05 * max(1.0, abs(loss32.item()))


# ----------------------------------------------------------------------------------------------------------
# Global loss vs oracle
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("batch,dim,scale", [(1, 3, 10.0), (2, 5, 10.0), (5, 7, 4.0), (8, 16, 25.0)])
def test_global_loss_matches_oracle(batch, dim, scale, dtype):
    generator = torch.Generator().manual_seed(batch * 100 + dim)
    images = torch.randn(batch, dim, generator=generator, dtype=torch.float64) * 3.0
    # report vectors are small (sum of word vectors / 97)
    reports = torch.randn(batch, dim, generator=generator, dtype=torch.float64) / 97.0
    i_ref, r_ref = _leaf(images, torch.float64), _leaf(reports, torch.float64)
    expected = reference_global_loss(i_ref, r_ref, scale)
    grads_ref = torch.autograd.grad(expected, (i_ref, r_ref))

    i, r = _leaf(images, dtype), _leaf(reports, dtype)
    actual = global_contrastive_loss(i, r, logit_scale=scale)
    grads = torch.autograd.grad(actual, (i, r))
    torch.testing.assert_close(actual.double(), expected.detach(), rtol=1e-5, atol=1e-6)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert torch.isfinite(g).all()
        atol = 1e-5 * max(g_ref.abs().max().item(), 1e-12)
        torch.testing.assert_close(g.double(), g_ref, rtol=1e-4, atol=atol)


def test_global_loss_default_scale_is_10():
    generator = torch.Generator().manual_seed(3)
    images, reports = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    torch.testing.assert_close(
        global_contrastive_loss(images, reports).double(),
        reference_global_loss(images.double(), reports.double(), 10.0),
        rtol=1e-5,
        atol=1e-6,
    )


# ----------------------------------------------------------------------------------------------------------
# Behaviour
# ----------------------------------------------------------------------------------------------------------


def _aligned_batch(seed: int, batch: int = 6, dim: int = 32, grid: tuple[int, int] = (4, 4), length: int = 5):
    """Text i's tokens are noisy copies of some of image i's region vectors."""
    generator = torch.Generator().manual_seed(seed)
    patches = torch.randn(batch, dim, *grid, generator=generator)
    regions = patches.flatten(2).transpose(1, 2)  # [B, N, D]
    num_regions = regions.shape[1]
    tokens = torch.zeros(batch, length, dim)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for i in range(batch):
        count = 1 if i == 0 else int(torch.randint(2, length + 1, (1,), generator=generator))
        picked = torch.randperm(num_regions, generator=generator)[:count]
        noise = 0.3 * torch.randn(count, dim, generator=generator)
        tokens[i, :count] = regions[i, picked] + noise
        mask[i, :count] = True
    return patches, tokens, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aligned_pairs_have_lower_local_loss_than_shuffled(seed):
    patches, tokens, mask = _aligned_batch(seed)
    # scale down so that the softmaxes are not saturated
    patches, tokens = patches * 0.3, tokens * 0.3
    aligned = local_contrastive_loss(patches, tokens, mask)
    batch = tokens.shape[0]
    for shift in range(1, batch):  # every cyclic shift is a derangement: no text stays with its image
        perm = torch.roll(torch.arange(batch), shift)
        shuffled = local_contrastive_loss(patches, tokens[perm], mask[perm])
        # by a wide margin: with gamma3 = 10 the mismatched diagonal costs tens of nats
        assert aligned < 0.5 * shuffled


def test_aligned_pairs_have_lower_global_loss_than_shuffled():
    generator = torch.Generator().manual_seed(5)
    images = torch.randn(8, 16, generator=generator)
    reports = images + 0.3 * torch.randn(8, 16, generator=generator)
    aligned = global_contrastive_loss(images, reports)
    shuffled = global_contrastive_loss(images, reports[torch.roll(torch.arange(8), 3)])
    assert aligned < 2 * math.log(8) < shuffled


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("chunk,recompute", [(None, False), (1, True)])
def test_small_batches_are_finite(batch, chunk, recompute):
    generator = torch.Generator().manual_seed(batch)
    patches = torch.randn(batch, 8, 3, 3, generator=generator, requires_grad=True)
    tokens = torch.randn(batch, 4, 8, generator=generator)
    mask = torch.zeros(batch, 4, dtype=torch.bool)
    mask[:, 0] = True  # single token rows
    if batch == 2:
        mask[1] = True
    tokens = tokens.masked_fill(~mask.unsqueeze(-1), 0.0).requires_grad_(True)
    loss = local_contrastive_loss(patches, tokens, mask, text_chunk_size=chunk, recompute=recompute)
    grads = torch.autograd.grad(loss, (patches, tokens))
    assert torch.isfinite(loss)
    assert all(torch.isfinite(g).all() for g in grads)
    if batch == 1:  # a single pair: both cross-entropies are exactly zero
        assert loss.item() == 0.0

    images = torch.randn(batch, 8, generator=generator, requires_grad=True)
    reports = torch.randn(batch, 8, generator=generator, requires_grad=True)
    global_loss = global_contrastive_loss(images, reports)
    grads = torch.autograd.grad(global_loss, (images, reports))
    assert torch.isfinite(global_loss)
    assert all(torch.isfinite(g).all() for g in grads)


def test_zero_vectors_are_finite():
    """A zero token vector (cosine clamp at 1e-8) and a zero image vector give finite loss and gradients."""
    patches = torch.randn(3, 4, 2, 2, requires_grad=True)
    tokens = torch.randn(3, 3, 4)
    tokens[1, 1] = 0.0
    tokens.requires_grad_(True)
    mask = torch.ones(3, 3, dtype=torch.bool)
    loss = local_contrastive_loss(patches, tokens, mask)
    grads = torch.autograd.grad(loss, (patches, tokens))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(
        loss.double(), reference_local_loss(patches.double(), tokens.double(), mask), rtol=1e-5, atol=1e-6
    )

    images = torch.randn(3, 4)
    images[0] = 0.0
    images.requires_grad_(True)
    reports = torch.randn(3, 4, requires_grad=True)
    loss = global_contrastive_loss(images, reports)
    grads = torch.autograd.grad(loss, (images, reports))
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


# ----------------------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------------------


def _ones(*shape: int) -> torch.Tensor:
    return torch.ones(*shape, dtype=torch.bool)


def test_local_loss_rejects_mismatched_width():
    with pytest.raises(ValueError):
        local_contrastive_loss(torch.randn(2, 8, 3, 3), torch.randn(2, 4, 6), _ones(2, 4))


def test_local_loss_rejects_mismatched_batch():
    with pytest.raises(ValueError):
        local_contrastive_loss(torch.randn(3, 8, 3, 3), torch.randn(2, 4, 8), _ones(2, 4))
    with pytest.raises(ValueError):
        local_contrastive_loss(torch.randn(2, 8, 3, 3), torch.randn(3, 4, 8), _ones(3, 4), text_chunk_size=1)


def test_local_loss_rejects_empty_mask_row():
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError):
        local_contrastive_loss(torch.randn(3, 8, 3, 3), torch.randn(3, 4, 8), mask)


def test_local_loss_rejects_bad_shapes():
    with pytest.raises(ValueError):  # mask shape
        local_contrastive_loss(torch.randn(2, 8, 3, 3), torch.randn(2, 4, 8), _ones(2, 5))
    with pytest.raises(ValueError):  # flattened patches
        local_contrastive_loss(torch.randn(2, 8, 9), torch.randn(2, 4, 8), _ones(2, 4))


def test_global_loss_rejects_mismatches():
    with pytest.raises(ValueError):
        global_contrastive_loss(torch.randn(4, 8), torch.randn(4, 6))
    with pytest.raises(ValueError):
        global_contrastive_loss(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError):
        global_contrastive_loss(torch.randn(4, 8, 1), torch.randn(4, 8, 1))


# ----------------------------------------------------------------------------------------------------------
# AFLocLoss
# ----------------------------------------------------------------------------------------------------------


def _encoder_outputs(seed: int = 0, batch: int = 4, dim: int = 8):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).requires_grad_(True)

    image = ImageEncoderOutput(
        shallow_patch_embeddings=randn(batch, dim, 4, 4),
        patch_embeddings=randn(batch, dim, 2, 3),
        image_embedding=randn(batch, dim),
    )
    word_mask = _random_mask(generator, batch, 6, contiguous=True)
    sentence_mask = _random_mask(generator, batch, 3, contiguous=True)
    text = TextEncoderOutput(
        word_embeddings=randn(batch, 6, dim),
        word_mask=word_mask,
        sentence_embeddings=randn(batch, 3, dim),
        sentence_mask=sentence_mask,
        report_embedding=randn(batch, dim),
    )
    return image, text


def _direct_terms(image, text, config: LossConfig, word_patches):
    temps = (config.attention_temperature, config.aggregation_temperature, config.logit_scale)
    return {
        "report": global_contrastive_loss(image.image_embedding, text.report_embedding, config.logit_scale),
        "sentence": local_contrastive_loss(
            image.patch_embeddings, text.sentence_embeddings, text.sentence_mask, *temps
        ),
        "word": local_contrastive_loss(word_patches, text.word_embeddings, text.word_mask, *temps),
    }


def test_afloc_loss_default_terms_and_total():
    image, text = _encoder_outputs()
    config = LossConfig()
    out = AFLocLoss()(image, text)
    assert set(out) == {"report", "sentence", "word", "total"}
    direct = _direct_terms(image, text, config, image.shallow_patch_embeddings)
    for name, value in direct.items():
        torch.testing.assert_close(out[name], value)
    torch.testing.assert_close(out["total"], out["report"] + out["sentence"] + out["word"])
    # the default (shallow) word term uses the shallow map: check against the oracle as well
    expected_word = reference_local_loss(
        image.shallow_patch_embeddings.double(), text.word_embeddings.double(), text.word_mask
    )
    torch.testing.assert_close(out["word"].double(), expected_word, rtol=1e-5, atol=1e-6)
    out["total"].backward()
    for tensor in (
        image.shallow_patch_embeddings,
        image.patch_embeddings,
        image.image_embedding,
        text.word_embeddings,
        text.sentence_embeddings,
        text.report_embedding,
    ):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()


def test_afloc_loss_weights_and_temperatures():
    image, text = _encoder_outputs(seed=1)
    config = LossConfig(
        attention_temperature=2.0,
        aggregation_temperature=3.0,
        logit_scale=7.0,
        report_weight=0.5,
        sentence_weight=2.0,
        word_weight=1.5,
        text_chunk_size=1,
        recompute=True,
    )
    out = AFLocLoss(config)(image, text)
    direct = _direct_terms(image, text, config, image.shallow_patch_embeddings)
    for name, value in direct.items():
        torch.testing.assert_close(out[name], value)
    torch.testing.assert_close(out["total"], 0.5 * out["report"] + 2.0 * out["sentence"] + 1.5 * out["word"])
    expected_sentence = reference_local_loss(
        image.patch_embeddings.double(), text.sentence_embeddings.double(), text.sentence_mask, 2.0, 3.0, 7.0
    )
    torch.testing.assert_close(out["sentence"].double(), expected_sentence, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        out["report"].double(),
        reference_global_loss(image.image_embedding.double(), text.report_embedding.double(), 7.0),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("zero", ["report", "sentence", "word"])
def test_afloc_loss_zero_weight_skips_term(zero):
    image, text = _encoder_outputs(seed=2)
    weights = {"report_weight": 0.7, "sentence_weight": 1.3, "word_weight": 0.4}
    weights[f"{zero}_weight"] = 0.0
    config = LossConfig(**weights)
    out = AFLocLoss(config)(image, text)
    kept = [name for name in ("report", "sentence", "word") if name != zero]
    assert set(out) == {*kept, "total"}
    direct = _direct_terms(image, text, config, image.shallow_patch_embeddings)
    expected_total = sum(weights[f"{name}_weight"] * direct[name] for name in kept)
    torch.testing.assert_close(out["total"], expected_total)


def test_afloc_loss_single_term():
    image, text = _encoder_outputs(seed=3)
    out = AFLocLoss(LossConfig(report_weight=1.0, sentence_weight=0.0, word_weight=0.0))(image, text)
    assert set(out) == {"report", "total"}
    torch.testing.assert_close(out["total"], out["report"])


def test_afloc_loss_deep_word_level_uses_deep_map():
    image, text = _encoder_outputs(seed=4)
    config = LossConfig(word_level="deep", report_weight=0.0, sentence_weight=0.0)
    out = AFLocLoss(config)(image, text)
    assert set(out) == {"word", "total"}
    deep = local_contrastive_loss(image.patch_embeddings, text.word_embeddings, text.word_mask)
    shallow = local_contrastive_loss(image.shallow_patch_embeddings, text.word_embeddings, text.word_mask)
    assert torch.equal(out["word"], deep)
    assert not torch.equal(out["word"], shallow)
    out["total"].backward()
    assert image.shallow_patch_embeddings.grad is None  # the shallow map takes no part
    assert image.patch_embeddings.grad is not None


def test_afloc_loss_forwards_chunking_and_recompute(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return local_contrastive_loss(*args, **kwargs)

    monkeypatch.setattr(losses_module, "local_contrastive_loss", spy)
    image, text = _encoder_outputs(seed=5)
    config = LossConfig(
        attention_temperature=2.0,
        aggregation_temperature=3.0,
        logit_scale=7.0,
        text_chunk_size=2,
        recompute=True,
        null_attention=True,
    )
    AFLocLoss(config)(image, text)
    assert len(calls) == 2  # sentence and word
    for args, kwargs in calls:
        bound = dict(
            zip(
                [
                    "patch_embeddings",
                    "token_embeddings",
                    "token_mask",
                    "attention_temperature",
                    "aggregation_temperature",
                    "logit_scale",
                    "text_chunk_size",
                    "recompute",
                    "null_attention",
                ],
                args,
                strict=False,
            ),
            **kwargs,
        )
        assert bound["attention_temperature"] == 2.0
        assert bound["aggregation_temperature"] == 3.0
        assert bound["logit_scale"] == 7.0
        assert bound["text_chunk_size"] == 2
        assert bound["recompute"] is True
        assert bound["null_attention"] is True
