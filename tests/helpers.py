"""Shared builders of the tests: tiny offline causal LMs of hub architectures, tiny SAEs, planted directions."""

import math

import torch

from saelib.lm import corpus
from saelib.subspace import random_subspace


def make_tiny_model(folder, arch="gpt2", n_layers=3, d=32):
    """Save a tiny random causal LM of a hub architecture plus a BPE tokenizer trained on the fixture text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, PreTrainedTokenizerFast
    from transformers.models.gemma2 import Gemma2Config

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<bos>", "<unk>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([corpus.fixture_path().read_text()], trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>")
    vocab = len(hf_tok)
    ids = dict(bos_token_id=1, pad_token_id=0, eos_token_id=1)
    if arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_positions=256, n_embd=d, n_layer=n_layers, n_head=2, **ids)
    elif arch == "gpt_neox":
        cfg = GPTNeoXConfig(
            vocab_size=vocab,
            hidden_size=d,
            num_hidden_layers=n_layers,
            num_attention_heads=2,
            intermediate_size=2 * d,
            max_position_embeddings=256,
            **ids,
        )
    else:
        cfg = Gemma2Config(
            vocab_size=vocab,
            hidden_size=d,
            num_hidden_layers=n_layers,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            intermediate_size=2 * d,
            max_position_embeddings=256,
            **ids,
        )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


def perturbed_sae(cfg):
    """An SAE with non-trivial biases and thresholds (as after training); seeds differ in every weight."""
    from saelib.sae import SAE

    sae = SAE(cfg)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.5)
        sae.W_enc.mul_(1 + torch.rand_like(sae.W_enc))
        if cfg.variant == "jumprelu":
            sae.log_threshold.copy_(torch.rand_like(sae.log_threshold).mul(0.3).add(0.05).log())
        if cfg.variant == "batchtopk":
            sae.threshold.copy_(torch.linspace(0.1, 0.3, cfg.n_seeds))
    return sae.eval()


def assert_saelens_agrees(sae, folder, x):
    """Every seed of `sae`, saved under `folder` (`save_sae`), loads in SAELens with our latents and reconstructions
    on `x (B, d_in)`: the independent reference for the SAELens layout."""
    from sae_lens import SAE as SaeLensSAE

    ours = sae(x)
    for s, seed in enumerate(sae.cfg.seeds):
        theirs = SaeLensSAE.load_from_disk(folder / f"seed_{seed}")
        with torch.no_grad():
            z = theirs.encode(x)
            torch.testing.assert_close(z, ours.latents[s], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(theirs.decode(z), ours.x_hat[s], atol=1e-5, rtol=1e-5)


def sparse_data(n=4096, d=16, f=24, seed=0):
    """`(n, d)` sparse sums of `f` random unit directions (8% active, magnitudes 0.5-1.5), scaled by 30."""
    g = torch.Generator().manual_seed(seed)
    D = torch.nn.functional.normalize(torch.randn(f, d, generator=g), dim=-1)
    return ((torch.rand(n, f, generator=g) < 0.08) * (0.5 + torch.rand(n, f, generator=g))) @ D * 30.0


def tiny_sae(zero_bias=False):
    """Two seeds of 48 latents at width 32 (the tiny LMs' width), decoder rows scaled by 3, optional decoder bias."""
    from saelib.config import SAEConfig
    from saelib.sae import SAE

    torch.manual_seed(1)
    sae = SAE(SAEConfig(d_in=32, d_sae=48, k=4, n_seeds=2)).eval()
    with torch.no_grad():
        sae.W_dec.mul_(3.0)
        if not zero_bias:
            sae.b_dec.normal_(0, 0.5)
    return sae


def planted_planes(d=32, noise=4, seed=0):
    """Three seeds; in each of two orthogonal planes every seed has 3 features 120 degrees apart, at phases 0, 60 and
    30 degrees (no feature has a cosine above 0.87 in another seed, but each lies in a cone of two of its features);
    plus `noise` random features per seed in the rest of the space."""
    g = torch.Generator().manual_seed(seed)
    q = random_subspace(d, d, g)
    rows, truth = [], []
    for phase in (0.0, 60.0, 30.0):
        feats, labels = [], []
        for p in range(2):
            for k in range(3):
                a = math.radians(phase + 120 * k)
                feats.append(math.cos(a) * q[2 * p] + math.sin(a) * q[2 * p + 1])
                labels.append(p)
        feats += list(torch.randn(noise, d - 4, generator=g) @ q[4:])
        labels += [-1] * noise
        rows.append(torch.stack(feats))
        truth.append(labels)
    return torch.stack(rows), torch.tensor(truth)


def tiny_grid_study(folder, layers=(0, 2), **overrides):
    """A `GridStudy` on the tiny GPT-2 saved in `folder`: the fixture text, 800 training tokens per layer, 3 seeds of
    TopK SAEs of 16 and 48 latents (reference: the last layer, 48 latents, trained in depth with 4 seeds on 3,200
    tokens), trained in seconds on CPU."""
    from saelib.chapters.grid import GridStudy
    from saelib.config import TrainConfig
    from saelib.lm.config import ActivationConfig

    acts = tuple(
        ActivationConfig(
            model=str(folder),
            layer=layer,
            corpus="fixture",
            context_len=32,
            n_train_tokens=800,
            n_eval_contexts=4,
            contexts_per_shard=8,
            batch_contexts=4,
        )
        for layer in layers
    )
    train = TrainConfig(
        n_tokens=1_600, batch_size=128, lr=3e-3, normalize_activations=True, dead_after_tokens=800, device="cpu"
    )
    base = dict(
        variants=("topk",),
        sizes=(16, 48),
        k=4,
        n_seeds=3,
        reference=(layers[-1], "topk", 48),
        reference_seeds=4,
        budgets=(1_600, 3_200),
        n_ce_contexts=1,
        thresholds=(0.7,),
        train=train,
    )
    return GridStudy(acts, **(base | overrides))
