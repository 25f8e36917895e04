"""The shipped pretrained MiniLM on real SST-2 sentences: identity at init, training on real text works."""

import pytest
import torch

import peft_space
from models import minilm_classifier, sst2_sentences

pytestmark = pytest.mark.slow  # real training on the shipped MiniLM and data


@pytest.fixture(scope="module")
def real_batch():
    model, tokenizer = minilm_classifier()
    sentences, labels = sst2_sentences(16)
    inputs = tokenizer(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
    return inputs, torch.tensor(labels)


@pytest.mark.parametrize("name", ["scaled_pa_ffn", "lora_attn", "pa_attn_pa_ffn", "pfeiffer", "bitfit"])
def test_pretrained_minilm_identity_at_init_and_loss_falls(real_batch, name):
    inputs, labels = real_batch
    model, _ = minilm_classifier()
    with torch.no_grad():
        reference = model.bert(**inputs).last_hidden_state
    sites = peft_space.preset(name).sites
    design = peft_space.preset(name, **{f"{s}.init": "lora" for s, m in sites.items() if "init" in m},
                               **{f"{s}.bottleneck": 16 for s, m in sites.items() if "bottleneck" in m})
    peft_space.apply(model, design)
    with torch.no_grad():
        assert torch.equal(model.bert(**inputs).last_hidden_state, reference)
    budget = peft_space.count_budget(model, design)
    assert budget.pretrained == 22_713_216 and 0 < budget.pct_actual < 2
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    first = None
    for _ in range(8):
        loss = model(**inputs, labels=labels).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model(**inputs, labels=labels).loss.item() < first
