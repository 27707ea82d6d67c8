"""Per-feature stability of external SAEs (saelib.external): SAELens-trained folders, sparsify and dictionary_learning
layouts, our own stacks; exact copies score 1; incompatible sets fail naming the offending path; the report."""

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch
from helpers import sparse_data
from safetensors.torch import save_file

from saelib import cli, external, stability
from saelib.config import SAEConfig
from saelib.sae import SAE, save_sae
from saelib.stability import STABLE, anchor_stability, feature_stability

D_IN, D_SAE, K = 16, 24, 4


@pytest.fixture(scope="module")
def saelens_folders(tmp_path_factory):
    """Three tiny TopK SAEs trained by SAELens's own trainer (different seeds, same data) and saved by SAELens."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    root = tmp_path_factory.mktemp("saelens")
    x = sparse_data(n=1024, d=D_IN, f=D_SAE)
    folders = []
    for seed in range(3):
        torch.manual_seed(seed)
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, device="cpu"))
        sae.cfg.metadata.hook_name = "blocks.3.hook_resid_post"
        cfg = SAETrainerConfig(
            total_training_samples=len(x),
            train_batch_size_samples=256,
            device="cpu",
            lr=3e-3,
            lr_end=0.0,
            dead_feature_window=10**9,
            feature_sampling_window=10**9,
        )
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            SAETrainer(cfg=cfg, sae=sae, data_provider=iter(x.split(256))).fit()
        folders.append(root / f"seed_{seed}")
        sae.save_inference_model(folders[-1])
    return folders


def write_sparsify(folder, W_dec, W_enc, k=K):
    """A folder as sparsify's `SparseCoder.save_to_disk` writes it: `cfg.json` (its config plus `d_in`) and
    `sae.safetensors` (`encoder.weight (d_sae, d_in)`, `encoder.bias`, `W_dec (d_sae, d_in)`, `b_dec`)."""
    folder.mkdir(parents=True)
    cfg = dict(activation="topk", expansion_factor=32, normalize_decoder=True, num_latents=len(W_dec), k=k)
    cfg |= dict(multi_topk=False, skip_connection=False, transcode=False, d_in=W_dec.shape[1])
    (folder / "cfg.json").write_text(json.dumps(cfg))
    state = {
        "encoder.weight": W_enc.T.contiguous(),
        "encoder.bias": torch.zeros(len(W_dec)),
        "W_dec": W_dec.contiguous(),
        "b_dec": torch.zeros(W_dec.shape[1]),
    }
    save_file(state, str(folder / "sae.safetensors"))
    return folder


def write_dictionary_learning(folder, W_dec, W_enc, layer=3, topk=False):
    """A folder as dictionary_learning's trainers write it: `ae.pt` (the state dict: `encoder.weight (d_sae, d_in)`,
    `encoder.bias`, `decoder.weight (d_in, d_sae)`, and `bias` (AutoEncoder) or `b_dec` and `k` (AutoEncoderTopK))
    and `config.json` with the trainer's `activation_dim`, `dict_size`, `layer`, `submodule_name`."""
    folder.mkdir(parents=True)
    state = {
        "encoder.weight": W_enc.T.contiguous(),
        "encoder.bias": torch.zeros(len(W_dec)),
        "decoder.weight": W_dec.T.contiguous(),
    }
    if topk:
        state |= {"b_dec": torch.zeros(W_dec.shape[1]), "k": torch.tensor(K)}
    else:
        state["bias"] = torch.zeros(W_dec.shape[1])
    torch.save(state, folder / "ae.pt")
    trainer = dict(dict_class="AutoEncoderTopK" if topk else "AutoEncoder", activation_dim=W_dec.shape[1])
    trainer |= dict(dict_size=len(W_dec), layer=layer, lm_name="tiny", submodule_name=f"resid_post_layer_{layer}")
    (folder / "config.json").write_text(json.dumps({"trainer": trainer}))
    return folder


def random_weights(seed, d_in=D_IN, d_sae=D_SAE):
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.nn.functional.normalize(torch.randn(d_sae, d_in, generator=g), dim=-1)
    return W_dec, W_dec.T + 0.1 * torch.randn(d_in, d_sae, generator=g)


def test_saelens_trained_folders_load_as_saelens_reads_them(saelens_folders):
    from sae_lens import SAE as SaeLensSAE

    saes = external.read_saes(saelens_folders)
    assert [s.format for s in saes] == ["saelens"] * 3 and saes[0].hook == "blocks.3.hook_resid_post"
    for folder, ours in zip(saelens_folders, saes):
        theirs = SaeLensSAE.load_from_disk(folder)
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            torch.testing.assert_close(getattr(ours, name), getattr(theirs, name).detach())
    stack = external.load_stack(saelens_folders)  # and behaves as SAELens's SAE on data
    assert stack.cfg.variant == "topk" and stack.cfg.k == K
    x = sparse_data(n=64, d=D_IN, f=D_SAE, seed=1)
    theirs = SaeLensSAE.load_from_disk(saelens_folders[1])
    with torch.no_grad():
        torch.testing.assert_close(stack(x).latents[1], theirs.encode(x), atol=1e-5, rtol=1e-5)


def test_scores_agree_with_the_papers_estimator_and_all_pairs(saelens_folders):
    scores = external.score_saes(saelens_folders, anchor=1, threshold=0.6, progress=False)
    dec = torch.stack([s.W_dec for s in external.read_saes(saelens_folders)])
    ref = anchor_stability(dec, anchor=1, threshold=0.6)  # the independent reference for p, labels and max_cos
    np.testing.assert_allclose(scores.features.p, ref.p.numpy())
    torch.testing.assert_close(scores.labels["max_cos"], ref.max_cos)
    assert (scores.labels["label"] == ref.label).all()
    # the recorded best match really has the recorded cosine
    unit = torch.nn.functional.normalize(dec, dim=-1)
    for t in (0, 2):
        match = torch.as_tensor(scores.features[f"match_{t}"].to_numpy().copy())
        cos = (unit[1] * unit[t][match]).sum(-1)
        np.testing.assert_allclose(scores.features[f"cos_{t}"], cos.numpy(), atol=1e-5)
    stack = external.load_stack(saelens_folders)
    allpairs = feature_stability(stack, _cfg(0.6)).stability[1]
    np.testing.assert_allclose(scores.features.all_pairs_stability, allpairs.numpy())
    assert scores.summary["n_saes"] == 3 and len(scores.pairs) == 4  # 2 anchor pairs, real and null
    last = scores.n_sweep.iloc[-1]
    assert last.n == 2 and last.mean_p == pytest.approx(scores.summary["mean_p"])


def _cfg(threshold):
    from saelib.config import StabilityConfig

    return StabilityConfig(threshold=threshold)


@pytest.mark.parametrize("fmt", ["saelens", "sparsify", "dictionary_learning", "dictionary_learning_topk"])
def test_exact_copies_score_one(tmp_path, saelens_folders, fmt):
    W_dec, W_enc = random_weights(0)
    if fmt == "saelens":
        folders = [shutil.copytree(saelens_folders[0], tmp_path / f"copy_{i}") for i in range(3)]
    elif fmt == "sparsify":
        folders = [write_sparsify(tmp_path / f"run_seed{i}" / "layers.3", W_dec, W_enc) for i in range(3)]
    else:
        topk = fmt.endswith("topk")
        folders = [write_dictionary_learning(tmp_path / f"ae_{i}", W_dec, W_enc, topk=topk) for i in range(3)]
    scores = external.score_saes(folders, progress=False)
    assert (scores.features.p == 1).all() and (scores.labels["label"] == STABLE).all()
    assert (scores.features.all_pairs_stability == 1).all()
    s = scores.summary
    assert s["shared_fraction"] == 1 and s["pw_mcc"] == pytest.approx(1, abs=1e-5) and s["stable_fraction"] == 1
    assert s["null_mean_p"] < 0.2 and s["null_pw_mcc"] < 0.9  # untrained SAEs of the same shapes
    assert {src["format"] for src in s["sources"]} == {fmt.removesuffix("_topk")}


def test_layouts_keep_each_projects_conventions(tmp_path):
    W_dec, W_enc = random_weights(3)
    sp = external.read_sae(write_sparsify(tmp_path / "run" / "layers.5", W_dec, W_enc))[0]
    dl = external.read_sae(write_dictionary_learning(tmp_path / "dl", W_dec, W_enc, layer=5))[0]
    dl_topk = external.read_sae(write_dictionary_learning(tmp_path / "dlk", W_dec, W_enc, layer=5, topk=True))[0]
    for sae in (sp, dl, dl_topk):
        torch.testing.assert_close(sae.W_dec, W_dec)  # (d_sae, d_in) whatever the file's orientation
        torch.testing.assert_close(sae.W_enc, W_enc)  # (d_in, d_sae)
    assert sp.hook == "layers.5" and sp.k == K and dl.hook == "resid_post_layer_5" and dl.k is None
    assert dl_topk.k == K
    stack = external.load_stack([tmp_path / "dl", tmp_path / "dlk"])
    assert stack.cfg.variant == "relu" and stack.n_seeds == 2  # k recorded by one of them only
    torch.testing.assert_close(stack.W_dec[0], W_dec)


def test_our_stacks_load_seed_by_seed_and_mix_with_other_formats(tmp_path):
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, n_seeds=3))
    save_sae(sae, tmp_path / "ours")
    saes = external.read_saes([tmp_path / "ours"])
    assert [s.source for s in saes] == [f"{tmp_path / 'ours'}#seed_{i}" for i in range(3)]
    scores = external.score_saes([tmp_path / "ours"], anchor=2, progress=False, null=False, all_pairs=False)
    ref = anchor_stability(sae.decoder_directions(), anchor=2)
    np.testing.assert_allclose(scores.features.p, ref.p.numpy())
    via_stability = stability.score_saes([tmp_path / "ours"], anchor=2, progress=False, null=False, all_pairs=False)
    assert via_stability.summary == scores.summary  # the thin wrapper in saelib.stability
    assert "null_mean_p" not in scores.summary and "all_pairs_stability" not in scores.features
    # an exact copy of seed 0 in sparsify's layout matches every latent of seed 0 with cosine 1
    write_sparsify(tmp_path / "sp" / "layers.0", sae.W_dec[0].detach(), sae.W_enc[0].detach())
    mixed = external.score_saes([tmp_path / "ours", tmp_path / "sp" / "*"], anchor=0, progress=False, null=False)
    assert (mixed.features.match_3 == np.arange(D_SAE)).all()
    np.testing.assert_allclose(mixed.features.cos_3, 1, atol=1e-5)


def test_an_incompatible_set_fails_with_one_line_naming_the_offending_path(tmp_path):
    W_dec, W_enc = random_weights(0)
    good = [write_sparsify(tmp_path / f"s{i}" / "layers.3", W_dec, W_enc) for i in range(2)]
    wide = write_sparsify(tmp_path / "wide" / "layers.3", *random_weights(1, d_in=D_IN + 8))
    with pytest.raises(ValueError, match=f"^{wide}[^\n]* d_in=24 [^\n]*d_in=16") as e:
        external.score_saes([*good, wide], progress=False)
    assert "\n" not in str(e.value)
    other_hook = write_sparsify(tmp_path / "s9" / "layers.4", W_dec, W_enc)
    with pytest.raises(ValueError, match=f"^{other_hook} was trained on hook 'layers.4'"):
        external.read_saes([*good, other_hook])
    narrow = write_dictionary_learning(tmp_path / "dl", *random_weights(2, d_sae=D_SAE // 2), layer=3)
    with pytest.raises(ValueError, match=f"^{narrow} has d_sae=12"):
        external.read_saes([good[0], narrow])
    with pytest.raises(ValueError, match="at least 2 SAEs"):
        external.read_saes(good[:1])


def test_missing_paths_and_globs_and_pretrained_names_fail_plainly(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="matches no path"):
        external.expand_paths([str(tmp_path / "nothing*")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'empty'} holds no SAE"):
        external.read_sae(tmp_path / "empty")
    W_dec, W_enc = random_weights(0)
    write_sparsify(tmp_path / "run" / "layers.2", W_dec, W_enc)
    write_sparsify(tmp_path / "run" / "layers.3", W_dec, W_enc)
    with pytest.raises(FileNotFoundError, match="its folders layers.2, layers.3 do: pass .*/run/<one of them>"):
        external.read_sae(tmp_path / "run")
    with pytest.raises(ValueError, match="saelens:RELEASE:SAE_ID"):
        external.read_sae("saelens:only-a-release")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="^'saelens:no-such-release:x' could not be loaded by SAELens"):
        external.read_sae("saelens:no-such-release:x")


@pytest.mark.parametrize("chunk,col", [(7, 5), (64, 13), (3, 200), (200, 1)])
def test_column_tiling_equals_the_untiled_block_and_a_brute_force_argmax(chunk, col):
    dirs = torch.randn(4, 50, 8)
    dirs[2, 17] = dirs[0, 3] * 2.0  # an exact match, in a column block of its own for most tilings
    best, arg = external.anchor_matches(dirs, anchor=0, chunk_size=chunk, col_chunk=col)
    untiled_best, untiled_arg = external.anchor_matches(dirs, anchor=0, chunk_size=50, col_chunk=50)  # one block
    torch.testing.assert_close(best, untiled_best)
    assert torch.equal(arg, untiled_arg)
    unit = torch.nn.functional.normalize(dirs, dim=-1)
    cos = torch.einsum("fd,tgd->tfg", unit[0], unit[1:])  # (N, F, F): the whole similarity, independently
    torch.testing.assert_close(best, cos.amax(-1))
    assert torch.equal(arg, cos.argmax(-1)) and arg[1, 3] == 17 and best[1, 3] == pytest.approx(1.0)
    assert external.block_elements(50, chunk, col) == min(chunk, 50) * min(col, 50)
    with pytest.raises(ValueError, match="col_chunk"):
        external.anchor_matches(dirs, col_chunk=0)


def test_blockwise_row_max_bounds_its_block(monkeypatch):
    shapes = []
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b, out=None: shapes.append(out.shape) or mm(a, b, out=out))
    rows, cols = torch.randn(30, 4), torch.randn(1000, 4)
    best, arg = stability.blockwise_row_max(rows, cols, row_block=8, col_block=16)
    assert max(r * c for r, c in shapes) == 8 * 16 and len(shapes) == 4 * 63  # never more than one 8 x 16 block
    ref = rows @ cols.T
    torch.testing.assert_close(best, ref.amax(1))
    assert torch.equal(arg, ref.argmax(1))


def test_sweeps_known_answers():
    max_cos = torch.tensor([[0.9, 0.5, 0.75], [0.8, 0.2, 0.65], [0.95, 0.1, 0.72]])  # (N=3, F=3)
    sweep = external.n_sweep(max_cos, threshold=0.7, epsilon=0.05)
    assert sweep.stable.tolist() == pytest.approx([2 / 3, 1 / 3, 1 / 3])  # latent 2 fails at the 2nd seed
    assert sweep.unstable.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3])
    taus = external.threshold_sweep(max_cos, [0.05, 0.7, 0.99], epsilon=0.05)
    assert taus.stable.tolist() == pytest.approx([1, 1 / 3, 0]) and taus.unstable.tolist() == pytest.approx(
        [0, 1 / 3, 1]
    )


def test_cli_writes_the_report_folder_and_refuses_bad_input(tmp_path, capsys):
    W_dec, W_enc = random_weights(0)
    for i in range(3):
        write_sparsify(tmp_path / f"seed{i}" / "layers.3", W_dec, W_enc)
    out = tmp_path / "report"
    cli.main(["stability", str(tmp_path / "seed*" / "layers.3"), "--out", str(out), "--no-report", "--device", "cpu"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean_p"] == 1 and summary["report"] == "not requested" and len(summary["sources"]) == 3
    assert summary["all_pairs_mean_stability"] == 1 and "null_mean_p" in summary
    cli.main(
        ["stability", str(tmp_path / "seed*" / "layers.3"), "--out", str(tmp_path / "lean"), "--no-report"]
        + ["--no-all-pairs", "--no-null", "--anchor", "2", "--device", "cpu"]
    )
    lean = json.loads((tmp_path / "lean" / "summary.json").read_text())
    assert lean["anchor"] == 2 and lean["all_pairs_mean_stability"] is None and "null_mean_p" not in lean
    for name in ("features.csv", "features.parquet", "labels.safetensors", "thresholds.csv", "n_sweep.csv"):
        assert (out / name).is_file()
    from safetensors.torch import load_file

    labels = load_file(str(out / "labels.safetensors"))
    assert labels["p"].shape == (D_SAE,) and labels["argmax"].shape == (2, D_SAE)
    capsys.readouterr()  # the progress bars so far
    with pytest.raises(SystemExit) as e:
        cli.main(["stability", str(tmp_path / "seed0" / "layers.3"), str(tmp_path / "nope"), "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nope") in err
    with pytest.raises(SystemExit) as e:
        cli.main(["stability", str(tmp_path / "seed0" / "layers.3"), "--threshold", "1.5"])
    assert e.value.code == 2 and "--threshold" in capsys.readouterr().err


@pytest.mark.slow
def test_the_html_report_is_rendered(tmp_path, saelens_folders):
    pytest.importorskip("papermill")
    scores = external.score_saes(saelens_folders, out=tmp_path / "report", progress=False)
    try:
        import nbconvert  # noqa: F401
    except ImportError:  # the executed notebook is kept instead, and the summary says why
        assert scores.summary["report"].startswith("not rendered: nbconvert")
        assert (tmp_path / "report" / "report.ipynb").is_file()
        return
    html = (tmp_path / "report" / "report.html").read_text()
    assert scores.summary["report"] == "report.html" and "Per-feature stability of your SAEs" in html
    assert html.count("<img") >= 3  # the histogram and the two sweeps
