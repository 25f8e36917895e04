"""Decoder-only language models on generation and classification tasks (issue 26, item 1): tiny random-init
checkpoints saved to a folder as a user's hub model is, with a byte-level BPE tokenizer that has no pad token."""

import dataclasses
import json
import random

import pytest
import torch

import peft_space
import trainers
from decoder_fixtures import BOS, FAMILIES, QWEN_PAD, byte_bpe_tokenizer, save_tiny_decoder
from peft_space import DesignError, FieldError
from trainers import Task, causal
from trainers.loop import Run
from trainers.metrics import accuracy, rouge
from trainers.models import load_base, prepare, set_pooling

WORDS = ("one", "two", "three", "four", "five", "six")
QUICK = dict(batch_size=8, micro_batch=8, label_smoothing=0.0, warmup_ratio=0.0, progress=False, threads=1)


def generation_task(**fields) -> Task:
    files = {"train": "train.jsonl", "validation": "validation.jsonl"}
    return Task("say_word", "generation", ("none", None), {}, files, ("question",), "answer", rouge, "perplexity",
                False, {"max_source_length": 32, "max_target_length": 8, "max_generate": 4, "min_generate": 1},
                **fields)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A learnable synthetic task: "say two" -> "two"; "good ..." or "bad ..." -> its sentiment."""
    folder, draw = tmp_path_factory.mktemp("data"), random.Random(0)
    for split, n in (("train", 64), ("validation", 16)):
        with open(folder / f"{split}.jsonl", "w") as f:
            for _ in range(n):
                word = draw.choice(WORDS)
                f.write(json.dumps({"question": f"say {word}", "answer": word}) + "\n")
        with open(folder / f"{split}_cls.jsonl", "w") as f:
            for _ in range(n):
                label = draw.randrange(2)
                f.write(json.dumps({"text": f"{('bad', 'good')[label]} {draw.choice(WORDS)}", "label": label}) + "\n")
    return folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    # weights drawn wider than LLaMA's 0.02: the frozen lm_head of a random model must be able to express a peaked
    # distribution, or no design could lower the loss much
    return str(save_tiny_decoder(tmp_path_factory.mktemp("llama"), initializer_range=0.2))


def run_for(model: str, task: Task, design: peft_space.Design | None = None, **overrides) -> Run:
    """A run of ``task`` on ``model`` with ``design`` (default: LoRA) prepared, as ``trainers.train`` sets it up."""
    base = load_base(model, task.kind, task.num_labels)
    run = Run(task, trainers.resolve(task, overrides), base, 0)
    run.model = prepare(base, design or peft_space.preset("lora_attn", bottleneck=4), 0)
    return run


def rows(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"question": q, "answer": a} for q, a in pairs]


def test_the_loss_is_the_mean_target_token_cross_entropy_by_hand(llama):
    run = run_for(llama, generation_task())
    examples = run.encode(rows(("say three", "three"), ("say one two five", "six four")), 0)
    batch = run.collate(examples)
    loss, count = run.loss(batch, 0.0)
    total, tokens = 0.0, 0
    for e in examples:  # each sequence alone, unpadded: token t+1 scored by the logits at t, over the target only
        with torch.no_grad():
            logp = run.model(input_ids=torch.tensor([e["input_ids"]])).logits[0].log_softmax(-1)
        start = len(e["prompt"])
        for t in range(start, len(e["input_ids"])):
            total -= float(logp[t - 1, e["input_ids"][t]])
            tokens += 1
    assert count == tokens and loss.item() == pytest.approx(total / tokens, rel=1e-5)


def test_a_tokenizer_without_pad_pads_with_eos_and_keeps_the_targets_eos_and_one_bos(llama):
    tokenizer = byte_bpe_tokenizer()
    assert tokenizer.pad_token is None and tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id  # it adds BOS
    run = run_for(llama, generation_task())
    eos, bos = run.base.tokenizer.eos_token_id, run.base.tokenizer.bos_token_id
    assert run.base.tokenizer.pad_token_id == eos == run.model.config.pad_token_id
    assert len(run.base.tokenizer) == run.model.get_input_embeddings().weight.shape[0]  # no embedding resized
    short, long = run.encode(rows(("say one", "one"), ("say two three four", "two three four")), 0)
    assert short["input_ids"].count(bos) == 1 and short["input_ids"][0] == bos
    assert short["input_ids"][-1] == eos and short["labels"][-1] == eos  # EOS ends the target and is learned
    assert short["labels"][: len(short["prompt"])] == [-100] * len(short["prompt"])
    batch = run.collate([short, long])
    pad = len(long["input_ids"]) - len(short["input_ids"])
    assert batch["input_ids"][0, -pad:].tolist() == [eos] * pad  # right padding with EOS ...
    assert batch["labels"][0, -pad:].tolist() == [-100] * pad  # ... masked by position: the real EOS keeps its label
    assert batch["labels"][0, len(short["input_ids"]) - 1] == eos
    assert run.base.tokenizer.decode(short["input_ids"][len(short["prompt"]) :], skip_special_tokens=True) == "one"


def test_the_chat_template_makes_the_prompt_without_a_second_bos(llama):
    run = run_for(llama, generation_task(chat_template=True, prompt="Say: {question}"))
    (example,) = run.encode(rows(("say five", "five")), 0)
    tokenizer = run.base.tokenizer
    expected = tokenizer.apply_chat_template([{"role": "user", "content": "Say: say five"}], tokenize=True,
                                             add_generation_prompt=True, return_dict=True)["input_ids"]
    assert example["prompt"] == list(expected) and example["prompt"].count(tokenizer.bos_token_id) == 1
    assert tokenizer.decode(example["prompt"]).startswith(BOS + "<|user|>\nSay: say five")
    assert example["labels"][len(example["prompt"]) :] == tokenizer("five", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id]
    with pytest.raises(FieldError, match="chat_template"):
        causal.Prompter(generation_task(chat_template=True), _without_template(tokenizer), 32, 8)


def _without_template(tokenizer):
    plain = byte_bpe_tokenizer()
    plain.chat_template = None
    return plain


def test_truncation_cuts_the_input_column_only(llama):
    task = generation_task(prompt="Question: {question}\nAnswer:")
    run = run_for(llama, task, max_source_length=14, max_target_length=3)
    long = " ".join(WORDS * 5)
    (example,) = run.encode(rows((long, "the quick brown fox")), 0)
    tokenizer = run.base.tokenizer
    prompt = tokenizer.decode(example["prompt"], skip_special_tokens=True)
    assert len(example["prompt"]) <= 14 and prompt.startswith("Question: one two") and prompt.endswith("\nAnswer:")
    assert len(prompt) < len(f"Question: {long}\nAnswer:")
    target = example["input_ids"][len(example["prompt"]) :]
    cut = tokenizer("the quick brown fox", add_special_tokens=False)["input_ids"][:2]  # max_target_length 3: + EOS
    assert target == cut + [tokenizer.eos_token_id]
    with pytest.raises(FieldError, match="max_source_length"):  # the template alone does not fit
        run_for(llama, task, max_source_length=3).encode(rows(("say one", "one")), 0)


def test_a_prompt_names_nested_fields_whole(llama):
    """``{translation.en}`` is the nested field a task's inputs name (as WMT16's rows hold them), not an attribute."""
    task = dataclasses.replace(generation_task(prompt="English: {translation.en}\nRomanian:"),
                               inputs=("translation.en",), target="translation.ro")
    run = run_for(llama, task)
    (example,) = run.encode([{"translation": {"en": "say five", "ro": "spune cinci"}}], 0)
    tokenizer = run.base.tokenizer
    assert tokenizer.decode(example["prompt"], skip_special_tokens=True) == "English: say five\nRomanian:"
    assert example["reference"] == "spune cinci"

@pytest.mark.parametrize("design", [None, "prefix"])
def test_left_padded_batched_generation_equals_each_prompt_alone(llama, design):
    run = run_for(llama, generation_task(), peft_space.preset(design) if design else peft_space.Design({}))
    run.model.eval()
    examples = run.encode(rows(("say one", "x"), ("say two three four five", "x"), ("say six six", "x")), 0)
    pad = run.base.tokenizer.pad_token_id

    def step_logits(chunk):
        batch = causal.prompts(chunk, pad)
        out = run.model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                 return_dict_in_generate=True, output_logits=True)
        return torch.stack(out.logits, 1), out.sequences[:, batch["input_ids"].shape[1] :]

    together, new = step_logits(examples)
    for i, e in enumerate(examples):
        alone, alone_new = step_logits([e])
        assert torch.allclose(together[i], alone[0], atol=1e-4) and torch.equal(new[i], alone_new[0])
    texts = run.generate(examples, run.collate(examples))  # only the new tokens are decoded
    assert texts == run.base.tokenizer.batch_decode(new, skip_special_tokens=True)


def pretrained_weights(base) -> dict[str, torch.Tensor]:
    """The cached base model's own weights, the last trial's design removed (as the next trial's ``prepare`` does)."""
    prepare(base, peft_space.Design({}), 0)
    peft_space.remove(base.model)
    return {k: v.detach().clone() for k, v in base.model.state_dict().items()}


def test_lora_learns_a_synthetic_task_and_leaves_every_pretrained_weight_as_it_was(llama, data):
    base = load_base(llama, "generation", 0)
    before = pretrained_weights(base)
    trained = {}

    def frozen_parts(step, metrics):
        trained.update(lm_head=base.model.lm_head.weight.requires_grad,
                       embed=base.model.get_input_embeddings().weight.requires_grad)

    result = trainers.train(generation_task(), peft_space.preset("lora_attn", bottleneck=8), model=llama,
                            data_dir=str(data), steps=60, lr=5e-2, eval_every=1, eval_growth=60, report=frozen_parts,
                            **QUICK)
    assert result.status == "completed", result.error
    first, last = result.history[0][1]["perplexity"], result.history[-1][1]["perplexity"]
    assert [step for step, _ in result.history] == [1, 60] and last < 0.2 * first  # the stated margin: 5x lower
    assert result.test["rouge1"] > 0 and trained == {"lm_head": False, "embed": False}
    assert result.budget["pretrained"] == sum(p.numel() for p in base.model.parameters()) - result.budget["actual"]
    after = pretrained_weights(base)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_decoder_only_checkpoint_generates_as_a_causal_lm_and_refuses_prompt_tuning(tmp_path, data):
    path = str(save_tiny_decoder(tmp_path / "gpt2", family="gpt2"))
    base = load_base(path, "generation", 0)
    assert type(base.model).__name__ == "GPT2LMHeadModel" and base.causal and base.new_params == ()
    budget = trainers.budget_pct(path, "generation", 0, peft_space.preset("lora_attn", bottleneck=4))
    tied = sum(p.numel() for p in base.model.parameters())  # lm_head is the embedding: counted once
    assert budget == pytest.approx(100 * 2 * 2 * 4 * 32 * 2 / tied)  # q and v: 2·r·d each, 2 layers
    with pytest.raises(FieldError, match=r"^max_source_length: 250 is not allowed; allowed: at most 248 with"):
        run_for(path, generation_task(), max_source_length=250).encode(rows(("say one", "one")), 0)  # 256 positions
    with pytest.raises(DesignError, match=r"^input.form: 'prompt' is not allowed; allowed: none on a decoder-only"):
        trainers.train(generation_task(), peft_space.preset("prompt_tuning"), model=path, data_dir=str(data), steps=1,
                       **QUICK)
    with pytest.raises(DesignError, match=r"^input.form: 'prompt' is not allowed"):  # a search rejects it before a trial
        trainers.budget_pct(path, "generation", 0, peft_space.preset("prompt_tuning"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_trains_on_the_causal_path(tmp_path, data, family):
    path = str(save_tiny_decoder(tmp_path / family, family=family))
    base = load_base(path, "generation", 0)
    before = pretrained_weights(base)
    result = trainers.train(generation_task(), peft_space.preset("lora_ffn", bottleneck=4), model=path,
                            data_dir=str(data), steps=2, lr=1e-2, train_examples=16, eval_examples=8, **QUICK)
    assert result.status == "completed" and result.test["perplexity"] < float("inf")
    after = pretrained_weights(base)  # GPT-2's and Gemma's tied embeddings included
    assert all(torch.equal(before[k], after[k]) for k in before)
    tokenizer = base.tokenizer
    # Qwen's tokenizer class brings its own pad token; the others pad with EOS
    assert (tokenizer.pad_token == QWEN_PAD) if family == "qwen2" else tokenizer.pad_token == tokenizer.eos_token


def classification_task() -> Task:
    return Task("good_bad", "classification", ("none", None), {}, {"train": "train_cls.jsonl",
                                                                    "validation": "validation_cls.jsonl"},
                ("text",), "label", accuracy, "accuracy", True, {"max_source_length": 16}, num_labels=2)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classification_on_a_decoder_only_model_trains_its_head_on_the_last_token(llama, data, pooling):
    result = trainers.train(classification_task(), peft_space.preset("lora_attn", bottleneck=4), model=llama,
                            data_dir=str(data), steps=40, lr=1e-2, pooling=pooling, dropout=0.05, **QUICK)
    base = load_base(llama, "classification", 2)
    assert base.model.model.layers[0].self_attn.attention_dropout == 0.05  # LLaMA has no Dropout modules
    assert type(base.model).__name__ == "LlamaForSequenceClassification" and base.new_params == ("score.weight",)
    assert base.model.config.pad_token_id == base.tokenizer.eos_token_id
    assert result.status == "completed" and result.budget["head"] == 2 * 32
    assert result.test["accuracy"] >= 0.9, result.history


def test_the_head_reads_the_last_non_padding_token_or_the_mean_put_there(llama):
    run = run_for(llama, classification_task(), pooling="cls")
    run.model.eval()
    texts = [{"text": "good one", "label": 1}, {"text": "bad two three four five six", "label": 0}]

    def logits(chunk):
        return run.model(**{k: v for k, v in run.collate(run.encode(chunk, 0)).items() if k != "labels"}).logits

    with torch.no_grad():
        together = logits(texts)
        for i, row in enumerate(texts):  # right padding does not move what the head reads
            assert torch.allclose(together[i], logits([row])[0], atol=1e-5)
        batch = run.collate(run.encode(texts, 0))
        hidden = run.model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        mask = batch["attention_mask"].unsqueeze(-1).float()
        mean = (hidden * mask).sum(1) / mask.sum(1)
        set_pooling(run.model, "mean")
        assert torch.allclose(logits(texts), run.model.score(mean), atol=1e-5)


def test_bf16_base_and_gradient_checkpointing_train_on_the_causal_path(llama, data):
    base = load_base(llama, "generation", 0)
    before = pretrained_weights(base)
    mam = peft_space.preset("mam", **{"attn.bottleneck": 4, "ffn.bottleneck": 16})
    result = trainers.train(generation_task(), mam, model=llama,
                            data_dir=str(data), steps=4, lr=1e-2, base_dtype="bf16", gradient_checkpointing=True,
                            **QUICK)
    assert result.status == "completed", result.error
    assert base.model.lm_head.weight.dtype == torch.bfloat16 and base.model.model.norm.weight.dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(m["perplexity"])) for _, m in result.history)
    after = pretrained_weights(base)  # the next trial gets the fp32 weights back, bit for bit
    assert all(torch.equal(before[k], after[k]) for k in before)
