"""Decoder-only families in the design space: LLaMA (grouped-query), Qwen2 (biased q, k, v), Qwen3 (q/k norms),
Mistral (sliding window), Gemma 2 (attention logit soft-capping, sandwich norms), Gemma 3, GPT-2 (fused Conv1D).

Each from a tiny random-init config: peft_space's attention function equals the model's own eager attention,
every preset either trains or is refused with one line saying why, and decoding through the KV cache equals
one pass.
"""

import copy
import functools

import pytest
import torch
import transformers as T
from peft import PeftModel, PrefixTuningConfig, get_peft_model

import peft_space
from peft_space import DesignError
from peft_space.attention import HeadInsertion
from peft_space.layers import Insertion

VOCAB, WINDOW, SOFTCAP = 48, 4, 1.0  # sequences below are 10 tokens: longer than the window
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
             vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.2)
GEMMA = dict(head_dim=8, query_pre_attn_scalar=8, sliding_window=WINDOW,
             layer_types=["sliding_attention", "full_attention"])
CONFIGS = {
    "llama": lambda **kw: T.LlamaConfig(**SIZES, **kw),
    "qwen2": lambda **kw: T.Qwen2Config(**SIZES, **kw),
    "qwen3": lambda **kw: T.Qwen3Config(**SIZES, head_dim=8, **kw),
    "mistral": lambda **kw: T.MistralConfig(**{**SIZES, "sliding_window": WINDOW, **kw}),
    "gemma2": lambda **kw: T.Gemma2Config(**{**SIZES, **GEMMA, "attn_logit_softcapping": SOFTCAP, **kw}),
    "gemma3": lambda **kw: T.Gemma3TextConfig(**{**SIZES, **GEMMA, **kw}),
    "gpt2": lambda **kw: T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64, bos_token_id=1,
                                      eos_token_id=2, initializer_range=0.2, resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0, **kw),
}
FAMILIES = list(CONFIGS)

# Every preset a family refuses, with the reason its one-line error gives; every other preset must train.
PRE_LN = "'block' needs the layer norm after the FFN's residual, which pre-layer-norm models lack"
REFUSED = {(family, "pfeiffer"): PRE_LN for family in FAMILIES} | {
    (family, "bitfit"): f"BitFit tunes existing biases): {family} has no bias at self_attn.q_proj"
    for family in ("llama", "qwen3", "mistral", "gemma2", "gemma3")
} | {("qwen2", "bitfit"): "BitFit tunes existing biases): qwen2 has no bias at self_attn.o_proj"}  # q, k, v have
TRAINS = [(f, p) for f in FAMILIES for p in peft_space.presets() if (f, p) not in REFUSED]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: a second intra-op thread costs more than it brings (25× here, on a shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _base(family: str, **config) -> torch.nn.Module:
    torch.manual_seed(0)
    return T.AutoModelForCausalLM.from_config(CONFIGS[family](**config), attn_implementation="eager").eval()


def tiny_lm(family: str, **config) -> torch.nn.Module:
    """A fresh copy of the family's seeded tiny causal LM, with the model's own eager attention."""
    return copy.deepcopy(_base(family, **config))


def left_padded() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, VOCAB, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    return ids, mask


def real_logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits at the real (unpadded) tokens, with positions counted from each row's first real token."""
    with torch.no_grad():
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[mask.bool()]


def small(name: str, **values) -> peft_space.Design:
    """The preset with bottleneck (r or l) 4 at every sized site: the tiny models are 32 wide."""
    sites = peft_space.preset(name).sites
    return peft_space.preset(name, **{f"{s}.bottleneck": 4 for s, mod in sites.items() if "bottleneck" in mod},
                             **{f"{s}.{k}": v for s, mod in sites.items() for k, v in values.items() if k in mod})


@pytest.mark.parametrize("family", FAMILIES)
def test_empty_design_equals_the_models_own_eager_attention(family):
    model, (ids, mask) = tiny_lm(family), left_padded()
    eager = real_logits(model, ids, mask)
    model.set_attn_implementation("peft_space")  # what apply hands attention to, no modification in it
    torch.testing.assert_close(real_logits(model, ids, mask), eager, rtol=0, atol=1e-5)
    model.set_attn_implementation("eager")
    # A head modification whose Δh is zero (multi-head adapter, P_v = 0) goes through the insertion's own path.
    peft_space.apply(model, peft_space.Design({"attn": {"form": "relu", "representation": "head", "bottleneck": 3,
                                                        "init": "lora"}}))
    assert model.config._attn_implementation == "peft_space"
    torch.testing.assert_close(real_logits(model, ids, mask), eager, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family, feature", [("mistral", {"sliding_window": None}),
                                             ("gemma2", {"attn_logit_softcapping": None})])
def test_the_window_and_the_soft_cap_are_in_force(family, feature):
    """The equivalence above is on sequences the window and the cap change: without them, the logits move."""
    ids, mask = left_padded()
    with_it, without = real_logits(tiny_lm(family), ids, mask), real_logits(tiny_lm(family, **feature), ids, mask)
    assert not torch.allclose(with_it, without, atol=1e-3)


def test_gemma2_soft_capped_prefix_equals_hf_peft_prefix_tuning():
    """Prefix columns through the soft-capped eager path equal HF PEFT's prefix (a KV cache), given the same vectors.
    The window spans the prefix and the sequence: HF PEFT's prefix, being cache entries, would fall out of it."""
    base, (ids, mask), length = tiny_lm("gemma2", sliding_window=64), left_padded(), 3
    ours = peft_space.apply(copy.deepcopy(base), peft_space.preset("prefix", bottleneck=length))
    peft_space.drop_reparameterization(ours)
    theirs = get_peft_model(copy.deepcopy(base), PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=length))
    rows = torch.cat([m.prefix.detach() for m in ours.modules() if isinstance(m, HeadInsertion)], dim=1)
    theirs.prompt_encoder["default"].embedding.weight.data.copy_(rows)
    positions = torch.arange(length, length + ids.shape[1]).expand_as(ids)  # PEFT numbers the tokens from l
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).logits[mask.bool()]
        got = ours(input_ids=ids, attention_mask=mask, position_ids=positions).logits[mask.bool()]
    assert not torch.allclose(got, real_logits(base, ids, mask), atol=1e-2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_gemma_sandwich_norms_the_sublayer_output_is_the_post_norm():
    model = tiny_lm("gemma2")
    peft_space.apply(model, peft_space.preset("pa_attn_pa_ffn", **{"attn.bottleneck": 2, "ffn.bottleneck": 2}))
    parents = {n.rsplit(".", 1)[0] for n, m in model.named_modules() if isinstance(m, Insertion)}
    assert parents == {f"model.layers.{i}.{norm}" for i in (0, 1)
                       for norm in ("post_attention_layernorm", "post_feedforward_layernorm")}


@pytest.mark.parametrize("family, name", REFUSED)
def test_a_preset_a_family_cannot_take_is_refused_in_one_line(family, name):
    model = tiny_lm(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DesignError) as refused:
        peft_space.apply(model, peft_space.preset(name))
    assert REFUSED[(family, name)] in str(refused.value) and "\n" not in str(refused.value)
    assert not hasattr(model, "peft_design") and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("representation", ["query", "key", "value"])
def test_bitfit_on_qwen2s_biased_projections_applies_where_llama_refuses(representation):
    design = peft_space.Design({"attn": {"form": "bias", "representation": representation}})
    model = peft_space.apply(tiny_lm("qwen2"), design)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        f"model.layers.{i}.self_attn.{representation[0]}_proj.peft_attn_{i}.delta.bias" for i in (0, 1)]
    with pytest.raises(DesignError, match=f"llama has no bias at self_attn.{representation[0]}_proj"):
        peft_space.apply(tiny_lm("llama"), design)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gpt2"])  # GPT-2's fused q|k|v does not export
def test_lora_on_attention_and_ffn_exports_to_hf_peft_with_identical_outputs(family, tmp_path):
    lora = {"form": "linear", "composition": "scaled", "scale": 2.0, "bottleneck": 3, "init": "bert"}
    design = peft_space.Design({"attn": {**lora, "representation": "attn_linears"},
                                "ffn": {**lora, "representation": "ffn_w1_w2"}})
    model, (ids, mask) = peft_space.apply(tiny_lm(family), design), left_padded()
    peft_space.export_peft(model, tmp_path)
    loaded = PeftModel.from_pretrained(tiny_lm(family), str(tmp_path))
    assert not torch.allclose(real_logits(model, ids, mask), real_logits(_base(family), ids, mask), atol=1e-3)
    torch.testing.assert_close(real_logits(loaded, ids, mask), real_logits(model, ids, mask), rtol=1e-5, atol=1e-5)


def next_token_task() -> torch.Tensor:
    """8 sequences of 12 tokens, each token the previous one plus 1 (cyclically): learnable from the input alone."""
    start = torch.randint(3, VOCAB, (8, 1), generator=torch.Generator().manual_seed(0))
    return 3 + (start - 3 + torch.arange(12)) % (VOCAB - 3)


@pytest.mark.parametrize("family, name", TRAINS)
def test_every_valid_preset_trains_and_leaves_the_language_model_frozen(family, name):
    model, ids = tiny_lm(family).train(), next_token_task()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)  # the design's initial weights, whatever ran before
    peft_space.apply(model, small(name, init="bert"))
    embeddings, lm_head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert not embeddings.requires_grad and not lm_head.requires_grad
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2, weight_decay=0.1)  # all of them: frozen must stay so
    first = model(input_ids=ids, labels=ids).loss.item()
    for _ in range(8):
        optimizer.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = model(input_ids=ids, labels=ids).loss.item()
    assert final < 0.98 * first, (first, final)  # the loss falls by at least 2 % in 8 steps (measured: 4–63 %)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items())  # bit for bit, tied embeddings included
    assert model.get_input_embeddings().weight is embeddings


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["prefix", "mam", "mh_pa_attn"])
def test_decoding_through_the_kv_cache_equals_one_pass(family, name):
    """Left-padded: 4 tokens at once, then one at a time through the cache (past Mistral's and Gemma's window)."""
    model, (ids, mask) = tiny_lm(family), left_padded()
    peft_space.apply(model, small(name, init="bert"))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        one_pass = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        out = model(input_ids=ids[:, :4], attention_mask=mask[:, :4], position_ids=positions[:, :4], use_cache=True)
        steps = [out.logits]
        for t in range(4, ids.shape[1]):
            out = model(input_ids=ids[:, t : t + 1], attention_mask=mask[:, : t + 1],
                        position_ids=positions[:, t : t + 1], cache=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1)[mask.bool()], one_pass[mask.bool()], rtol=0, atol=1e-4)
    assert not torch.allclose(one_pass[mask.bool()], real_logits(_base(family), ids, mask), atol=1e-3)


def test_prompt_tuning_refuses_kv_cache_generation_and_generates_without_one():
    model, (ids, mask) = tiny_lm("llama"), left_padded()
    peft_space.apply(model, peft_space.preset("prompt_tuning", bottleneck=3))
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    with pytest.raises(DesignError, match=r"input.form: 'prompt' .*\(no KV-cache generation\)"):
        model.generate(**kwargs, use_cache=True)
    generated = model.generate(**kwargs, use_cache=False)
    so_far = torch.cat([mask, torch.ones_like(generated[:, 11:])], 1)  # the mask of generated[:, :-1]
    with torch.no_grad():  # greedy: each new token is the argmax of one pass over everything before it
        logits = model(input_ids=generated[:, :-1], attention_mask=so_far,
                       position_ids=(so_far.cumsum(-1) - 1).clamp(min=0)).logits
    assert torch.equal(logits[:, -3:].argmax(-1), generated[:, 10:])
