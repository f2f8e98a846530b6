"""Bright ending (Chen et al., ICLR 2025) against a hand re-implementation of the released code from raw diffusers
pieces: the pipeline's own generation, its UNet outputs and its attention probabilities."""

import pytest
import torch

from memgeo.detect import SIGNALS, bright_ending
from memgeo.models import DiffusersScoreModel
from memgeo.models.tiny import float32_default
from memgeo.sampling import initial_noise

PROMPT = "a painting of a lighthouse at dusk"


class _Released:
    """The released AttentionStore, by hand: at the last step, the conditional half's cross-attention
    probabilities of the down blocks at full resolution, averaged over the heads."""

    def __init__(self, store, name, n_calls, full):
        from diffusers.models.attention_processor import AttnProcessor

        self.store, self.name, self.n_calls, self.full, self.inner, self.calls = store, name, n_calls, full, AttnProcessor(), 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        self.calls += 1
        if self.calls == self.n_calls and hidden_states.shape[1] == self.full:
            q = attn.head_to_batch_dim(attn.to_q(hidden_states))
            k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
            probs = attn.get_attention_scores(q, k, None)  # [2S * heads, N, 77]
            probs = probs.reshape(-1, attn.heads, *probs.shape[1:]).mean(1)
            self.store.append(probs[probs.shape[0] // 2:])  # the conditional half
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def test_matches_the_released_two_pass_computation(tiny_pipelines):
    from diffusers import StableDiffusionPipeline

    folder = tiny_pipelines["epsilon"]
    model = DiffusersScoreModel.from_pretrained(folder)
    n_steps, w, S = 4, 7.5, 2
    x_T = initial_noise(model, [0, 1])
    with float32_default():
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    h, wd = model.event_shape[1:]
    store = []
    procs = {name: (_Released(store, name, n_steps, h * wd) if name.startswith("down_blocks") and "attn2" in name else p)
             for name, p in pipe.unet.attn_processors.items()}
    pipe.unet.set_attn_processor(procs)
    outs = []
    hook = pipe.unet.register_forward_hook(lambda m, a, o: outs.append((o[0] if isinstance(o, tuple) else o.sample).detach().clone()))
    try:
        with torch.no_grad(), float32_default():
            pipe(PROMPT, latents=x_T.float(), num_inference_steps=n_steps, guidance_scale=w, output_type="latent",
                 num_images_per_prompt=S)
    finally:
        hook.remove()
    token_len = min(len(pipe.tokenizer.encode(PROMPT)), 77)  # as detect_mem.py: the end token is token_len - 1
    mask = torch.stack(store).mean(0)[..., token_len - 1].reshape(S, 1, h, wd)
    per_step = []
    for o in outs:
        u, c = o.chunk(2)
        per_step.append(((c - u) * mask).flatten(1).norm(dim=1) / mask.mean(dim=(1, 2, 3)))
    ref = torch.stack(per_step)  # [n_steps, S]
    res = bright_ending(model, PROMPT, x_T, n_steps=n_steps, guidance_scale=w)
    torch.testing.assert_close(res.extras["trace"].float(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(res.score.float(), ref.mean(0), rtol=1e-4, atol=1e-5)
    assert res.n_evals == 2 * n_steps + 1 and float(mask.std()) > 0  # a non-uniform mask: the check can fail
    first = bright_ending(model, PROMPT, x_T, n_steps=n_steps, guidance_scale=w, steps="first")
    torch.testing.assert_close(first.score.float(), ref[0], rtol=1e-4, atol=1e-5)
    assert SIGNALS["bright_ending"].generates


def test_needs_cross_attention():
    from memgeo.gmm import ConditionalGaussianMixture

    mix = ConditionalGaussianMixture.memorization_scenario(dim=4, n_memorized=2, n_generalizing=2, seed=0)
    with pytest.raises(ValueError, match="cross-attention"):
        bright_ending(mix, 0, initial_noise(mix, 2), n_steps=4)
    assert SIGNALS["bright_ending"].cross_attention and not SIGNALS["guidance_norm"].cross_attention


def test_bad_inputs(tiny_pipelines):
    model = DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])
    x = initial_noise(model, 2)
    with pytest.raises(ValueError, match="steps must be"):
        bright_ending(model, PROMPT, x, n_steps=4, steps="last")
    with pytest.raises(ValueError, match="layers must be"):
        bright_ending(model, PROMPT, x, n_steps=4, layers="up")
    with pytest.raises(ValueError, match="cond must be a prompt"):
        bright_ending(model, [PROMPT], x, n_steps=4)
    model.tokenizer = None  # a model built from parts without its tokenizer: the end token cannot be found
    with pytest.raises(ValueError, match="without its tokenizer"):
        bright_ending(model, PROMPT, x, n_steps=4)


def test_scan_stores_the_signal_as_computed_directly(tiny_pipelines, tmp_path):
    from memgeo.scan.readers import read_prompts
    from memgeo.scan import ScanConfig, prompt_scores, run_scan

    model = DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])
    (tmp_path / "p.txt").write_text(f"{PROMPT}\na blue cat\n")
    cfg = ScanConfig(signals=("bright_ending",), seeds=(0, 1), n_steps=4)
    result = run_scan(model, read_prompts(tmp_path / "p.txt"), tmp_path / "scan.jsonl", cfg, progress=False)
    _, scores, texts = prompt_scores(result, "bright_ending")
    direct = bright_ending(model, PROMPT, initial_noise(model, [0, 1]), n_steps=4).score.mean()
    assert float(scores[list(texts).index(PROMPT)]) == pytest.approx(float(direct), rel=1e-5)


def test_many_rows_in_one_generation_equal_one_at_a_time(tiny_pipelines):
    model = DiffusersScoreModel.from_pretrained(tiny_pipelines["epsilon"])
    prompts = [PROMPT, "a blue cat", "a much longer prompt about a red house by the sea"]
    x_T = initial_noise(model, [0, 1, 2])
    together = bright_ending(model, prompts, x_T, n_steps=4)
    alone = torch.cat([bright_ending(model, p, x_T[i:i + 1], n_steps=4).score for i, p in enumerate(prompts)])
    torch.testing.assert_close(together.score, alone, rtol=1e-4, atol=1e-6)
    assert SIGNALS["bright_ending"].batched
