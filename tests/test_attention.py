"""Inside attention: prefix tuning's exact gate, masks, KV caches, multi-head adapters, HF peft prefix tuning."""

import copy
import inspect
import math

import pytest
import torch
import transformers
from peft import PrefixTuningConfig, get_peft_model

import peft_space
from peft_space.attention import HeadInsertion
from models import batch, logits, tiny

PREFIX = {"form": "softmax", "representation": "head", "composition": "gated", "bottleneck": 3}


def gated_form(q, k, v, mask, scaling, p_k, p_v):
    """Eq. 7–9 computed directly: (1 - λ(x))·Attn(x W_q, C W_k, C W_v) + λ(x)·softmax(x W_q P_kᵀ) P_v, with
    λ(x) the softmax mass on the prefixes (Eq. 8), in float64. Shapes as the attention function gets them."""
    q, k, v, p_k, p_v = (t.double() for t in (q, k, v, p_k, p_v))
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    p_k, p_v = p_k.repeat_interleave(groups, 0), p_v.repeat_interleave(groups, 0)
    context = q @ k.transpose(-1, -2) * scaling
    if mask is not None:
        context = context.masked_fill(~mask, -math.inf)
    prefix = torch.einsum("bhnd,hld->bhnl", q, p_k) * scaling
    h = context.softmax(-1) @ v
    delta = torch.einsum("bhnl,hld->bhnd", prefix.softmax(-1), p_v)
    lam = torch.sigmoid(prefix.logsumexp(-1) - context.logsumexp(-1)).unsqueeze(-1)  # Eq. 8
    return ((1 - lam) * h + lam * delta).transpose(1, 2)


@pytest.fixture
def spy(monkeypatch):
    """Record every call of a head insertion: its inputs as the model passed them, and its output."""
    calls = []
    attend = HeadInsertion.attend

    def record(self, module, query, key, value, mask, **kwargs):
        out = attend(self, module, query, key, value, mask, **kwargs)
        calls.append((self, module, query, key, value, mask, kwargs.get("scaling"), out[0]))
        return out

    monkeypatch.setattr(HeadInsertion, "attend", record)
    return calls


CASES = [
    ("bert", "attn", "BertSelfAttention"),
    ("bart", "enc_attn", "BartAttention"),
    ("bart", "dec_attn", "BartAttention"),
    ("bart", "cross_attn", "BartAttention"),
    ("bert2bert", "cross_attn", "BertCrossAttention"),
    ("gpt2", "attn", "GPT2Attention"),
    ("llama", "attn", "LlamaAttention"),  # grouped-query: 4 query heads share 2 key/value heads
]


@pytest.mark.parametrize("arch, site, module_class", CASES, ids=[f"{a}-{s}" for a, s, _ in CASES])
def test_prefix_by_concatenation_equals_the_gated_form(spy, arch, site, module_class):
    model, inputs = tiny(arch), batch(arch)
    peft_space.apply(model, peft_space.Design({site: PREFIX}))
    with torch.no_grad():
        model(**inputs)
    assert len(spy) == 2  # one call per layer of that attention kind
    for insertion, module, q, k, v, mask, scaling, out in spy:
        assert type(module).__name__ == module_class
        assert mask is not None and mask.dtype == torch.bool  # the padding mask reached the attention function
        p_k, p_v = insertion.prefix_kv()
        expected = gated_form(q, k, v, mask, scaling or q.shape[-1] ** -0.5, p_k, p_v)
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    if site in ("attn", "enc_attn"):
        assert not spy[0][5].all()  # the padded keys are masked out


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama", "bart"])
def test_padded_tokens_are_not_attended(arch):
    model, inputs = tiny(arch), batch(arch)
    peft_space.apply(model, peft_space.preset("mam", **{"attn.bottleneck": 3, "ffn.bottleneck": 4}))
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["input_ids"][1, -2:] = 5  # padding positions of row 1
    attended = {k: v.clone() for k, v in inputs.items()}
    attended["input_ids"][1, 0] = 5  # a real token of row 1: the check can see a change
    with torch.no_grad():
        a, b, c = model(**inputs).logits, model(**changed).logits, model(**attended).logits
    if arch in ("bert", "bart"):  # every output (bart's decoder reads the encoder through unpadded keys only)
        torch.testing.assert_close(a, b)
    else:  # causal: the positions before the padding
        torch.testing.assert_close(a[1, :-2], b[1, :-2])
    assert not torch.allclose(a[1], c[1])


# HF PEFT's prefix tuning passes the prefix as a KV cache; transformers 5.24 took the cache out of BERT's forward.
BERT_TAKES_A_KV_CACHE = "past_key_values" in inspect.signature(transformers.BertModel.forward).parameters


@pytest.mark.parametrize("arch, task", [
    pytest.param("bert", "SEQ_CLS", marks=pytest.mark.skipif(
        not BERT_TAKES_A_KV_CACHE, reason="HF PEFT's prefix tuning needs a KV cache, BERT has none since transformers 5.24")),
    ("gpt2", "CAUSAL_LM"), ("llama", "CAUSAL_LM")])
def test_prefix_equals_hf_peft_prefix_tuning_given_the_same_vectors(arch, task):
    base, inputs = tiny(arch), batch(arch)
    length = 3
    ours = peft_space.apply(copy.deepcopy(base), peft_space.preset("prefix", bottleneck=length))
    peft_space.drop_reparameterization(ours)
    theirs = get_peft_model(copy.deepcopy(base), PrefixTuningConfig(task_type=task, num_virtual_tokens=length))
    # PEFT's prefix is one embedding row per virtual token: every layer's [keys | values] side by side.
    rows = torch.cat([m.prefix.detach() for m in ours.modules() if isinstance(m, HeadInsertion)], dim=1)
    theirs.prompt_encoder["default"].embedding.weight.data.copy_(rows)
    if arch == "bert":
        theirs.base_model.classifier.modules_to_save["default"].load_state_dict(ours.classifier.state_dict())
    # PEFT passes the prefix as a KV cache, so the model numbers the tokens from l: do the same for ours.
    positions = torch.arange(length, length + inputs["input_ids"].shape[1]).expand_as(inputs["input_ids"])
    with torch.no_grad():
        expected = theirs(**inputs).logits
        got = ours(**inputs, position_ids=positions).logits
    assert not torch.allclose(got, logits(base, inputs), atol=1e-3)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_drop_reparameterization_keeps_outputs_and_leaves_the_papers_count():
    model, inputs = tiny("bart"), batch("bart")
    design = peft_space.preset("prefix", bottleneck=3)
    peft_space.apply(model, design)
    before = logits(model, inputs)
    budget = peft_space.count_budget(model, design)
    assert budget.actual > budget.analytic == 2 * 3 * 32 * 3 * 2  # 2·l·d per attention sub-layer, 3 kinds × 2 layers
    peft_space.drop_reparameterization(model)
    torch.testing.assert_close(logits(model, inputs), before)
    after = peft_space.count_budget(model, design)
    assert after.actual == after.analytic == budget.analytic


def test_multi_head_adapter_zero_up_is_identity_and_otherwise_changes_only_its_attention():
    model, inputs = tiny("bart"), batch("bart")
    outputs = {}

    def record(name):
        return lambda module, args, out: outputs.__setitem__(name, out[0].detach().clone())

    for name, module in model.named_modules():
        if name.endswith(("self_attn", "encoder_attn")):
            module.register_forward_hook(record(name))
    with torch.no_grad():
        model(**inputs)
    reference = dict(outputs)
    mh_pa = {"form": "relu", "representation": "head", "bottleneck": 4}

    peft_space.apply(model, peft_space.Design({"cross_attn": {**mh_pa, "init": "lora"}}))  # P_v = 0
    with torch.no_grad():
        model(**inputs)
    assert all(torch.equal(outputs[n], reference[n]) for n in reference)
    peft_space.remove(model)

    peft_space.apply(model, peft_space.Design({"cross_attn": {**mh_pa, "init": "bert"}}))
    with torch.no_grad():
        model(**inputs)
    same = {n for n in reference if torch.equal(outputs[n], reference[n])}
    assert {n for n in reference if "encoder." in n} | {"model.decoder.layers.0.self_attn"} == same
    assert all(n not in same for n in reference if n.endswith("encoder_attn"))


def test_multi_head_budget_is_two_r_d_per_attention_sublayer():
    model = tiny("llama")  # d = 32, 2 layers
    budget = peft_space.count_budget(model, peft_space.preset("mh_pa_attn", bottleneck=4))
    assert budget.analytic == budget.actual == 2 * 4 * 32 * 2


@pytest.mark.parametrize("name", ["prefix", "prefix_nogate", "mh_pa_attn", "mam", "prompt_tuning", "lora_attn"])
def test_bart_beam_search_with_a_kv_cache_equals_without(name):
    model, inputs = tiny("bart"), batch("bart")
    sites = peft_space.preset(name).sites
    design = peft_space.preset(name, **{f"{s}.bottleneck": 3 for s in sites},
                               **{f"{s}.init": "bert" for s, m in sites.items() if "init" in m})
    peft_space.apply(model, design)
    kwargs = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], num_beams=3,
                  max_new_tokens=6, min_new_tokens=6, do_sample=False)
    with torch.no_grad():
        cached = model.generate(**kwargs, use_cache=True)
        uncached = model.generate(**kwargs, use_cache=False)
    assert cached.shape[0] == 2 and cached.shape[1] >= 7
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("arch", ["bart", "llama"])
@pytest.mark.parametrize("point", [
    {"form": "linear", "representation": "head", "composition": "scaled", "scale": 2.0},  # multi-head LoRA
    {"form": "relu", "representation": "head", "composition": "gated"},  # gated multi-head PA: λ = σ(q_i · w_i)
    {"form": "softmax", "representation": "head", "composition": "scaled", "learn_scale": True},
])
def test_other_points_inside_attention_train(arch, point):
    model, inputs = tiny(arch), batch(arch)
    peft_space.apply(model, peft_space.Design({"attn": {**point, "bottleneck": 4}}))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    first = model(**inputs).loss
    for _ in range(4):
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()
    assert model(**inputs).loss < first
    assert all(p.grad is not None for p in params)
