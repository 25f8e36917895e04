"""The design space as data: validation, round trips, ids, presets, and user extensions."""

import json

import pytest

import peft_space
from peft_space import Design, DesignError, Form, dimension
from peft_space.dimensions import DIMENSIONS


def test_every_preset_round_trips_through_flat_dict_and_json():
    for name in peft_space.presets():
        design = peft_space.preset(name)
        flat = design.to_dict()
        assert all("." in k and k.split(".")[0] in design.sites for k in flat)
        assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())
        assert Design.from_dict(flat) == design
        assert Design.from_json(design.to_json()) == design
        assert Design.from_dict(json.loads(json.dumps(flat))).id == design.id


def test_id_is_stable_short_and_distinguishes_designs():
    a = peft_space.preset("pa_ffn", bottleneck=512)
    assert a.id == peft_space.preset("pa_ffn").id == Design.from_dict(a.to_dict()).id
    assert len(a.id) == 10
    assert a.id != peft_space.preset("pa_ffn", bottleneck=256).id
    # Defaults are resolved, so spelling them out does not change the id.
    assert Design({"ffn": {}}).id == Design({"ffn": {"form": "relu", "bottleneck": 64, "insertion": "parallel"}}).id
    ids = {peft_space.preset(n).id for n in peft_space.presets()}
    assert len(ids) == len(peft_space.presets())


def test_inactive_dimensions_are_absent_and_conditional_ones_present():
    scaled = peft_space.preset("scaled_pa_ffn")
    assert scaled.to_dict()["ffn.scale"] == 4.0 and scaled.to_dict()["ffn.learn_scale"] is False
    added = peft_space.preset("pa_ffn")
    assert "ffn.scale" not in added.to_dict()
    bitfit = peft_space.preset("bitfit")
    assert set(bitfit.sites["attn"]) == {"form", "representation"}


def test_preset_overrides():
    assert peft_space.preset("pa_ffn", bottleneck=16).sites["ffn"]["bottleneck"] == 16
    mixed = peft_space.preset("pa_attn_pa_ffn", **{"attn.bottleneck": 8, "ffn.composition": "scaled", "ffn.scale": 2})
    assert mixed.sites["attn"]["bottleneck"] == 8 and mixed.sites["ffn"]["scale"] == 2.0
    # Overriding the composition drops the preset's scale instead of failing.
    assert "scale" not in peft_space.preset("lora_attn", composition="add").sites["attn"]


BAD = [
    (lambda: Design({"ffn": {"bottleneck": 0}}), "ffn.bottleneck: 0 is not allowed; allowed: an integer in [1, 65536]"),
    (lambda: Design({"ffn": {"bottleneck": 2.5}}), "ffn.bottleneck: 2.5"),
    (lambda: Design({"ffn": {"bottleneck": True}}), "ffn.bottleneck: True"),
    (lambda: Design({"ffn": {"scale": 2.0}}), "ffn.scale: 2.0 is not allowed; allowed: no value: it is used only with composition='scaled'"),
    (lambda: Design({"ffn": {"composition": "scaled", "scale": -1}}), "ffn.scale: -1 is not allowed; allowed: a number in [0.01, 100]"),
    (lambda: Design({"ffn": {"form": "tanh"}}), "ffn.form: 'tanh' is not allowed; allowed: one of 'linear', 'relu', 'gelu', 'softmax', 'prompt', 'bias'"),
    (lambda: Design({"ffn": {"insertion": "diagonal"}}), "ffn.insertion: 'diagonal' is not allowed; allowed: one of 'sequential', 'parallel'"),
    (lambda: Design({"ffn": {"representation": "query"}}), "ffn.representation: 'query' is not allowed; allowed: a ffn representation"),
    (lambda: Design({"attn": {"representation": "block"}}), "attn.representation: 'block'"),
    (lambda: Design({"ffn": {"composition": "multiply"}}), "ffn.composition: 'multiply' is not allowed; allowed: one of 'add', 'scaled', 'gated'"),
    (lambda: Design({"ffn": {"form": "softmax"}}), "ffn.form: 'softmax' is not allowed; allowed: 'softmax' only at attention sites"),
    (lambda: Design({"ffn": {"init": "xavier"}}), "ffn.init: 'xavier' is not allowed; allowed: one of 'lora', 'bert'"),
    (lambda: Design({"ffn": {"rank": 4}}), "ffn.rank: 4 is not allowed; allowed: dimensions 'form'"),
    (lambda: Design({"mlp": {}}), "site: 'mlp' is not allowed; allowed: one of 'attn', 'enc_attn', 'dec_attn', 'cross_attn', 'ffn'"),
    (lambda: Design({"attn": {}, "cross_attn": {}}), "site: 'cross_attn' is not allowed; allowed: a site that does not overlap 'attn'"),
    (lambda: Design({"ffn": {"form": "bias", "bottleneck": 8}}), "ffn.bottleneck: 8 is not allowed; allowed: no value: it is used only for forms with a size"),
    (lambda: Design({"ffn": {"composition": "scaled", "learn_scale": "maybe"}}), "ffn.learn_scale: 'maybe' is not allowed; allowed: true or false"),
    (lambda: Design.from_dict({"bottleneck": 8}), "bottleneck: 8 is not allowed; allowed: keys of the form 'site.dimension'"),
    (lambda: Design.from_json("{not json"), "design JSON"),
    (lambda: peft_space.preset("lora_qkv"), "preset: 'lora_qkv' is not allowed; allowed: one of 'bitfit'"),
    (lambda: peft_space.preset("pa_attn_pa_ffn", bottleneck=4), "bottleneck: 4 is not allowed; allowed: site-namespaced keys"),
    (lambda: dimension("rank"), "dimension: 'rank' is not allowed"),
]


@pytest.mark.parametrize("make, message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_points_name_field_value_and_allowed(make, message):
    with pytest.raises(DesignError) as err:
        make()
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_user_registers_a_new_value(scratch_registries):
    dimension("form").register(Form("tanh", "tanh adapter", activation="tanh"))
    design = Design({"ffn": {"form": "tanh", "bottleneck": 4}})
    assert design.to_dict()["ffn.form"] == "tanh"
    assert "tanh" in dimension("form").describe()


def test_user_registers_a_new_dimension(layers_dimension):
    from models import tiny

    design = Design({"ffn": {"bottleneck": 4, "layers": "upper"}})
    assert design.to_dict()["ffn.layers"] == "upper"
    assert Design({"ffn": {"bottleneck": 4}}).to_dict()["ffn.layers"] == "all"
    assert Design.from_dict(design.to_dict()) == design
    with pytest.raises(DesignError, match="ffn.layers: 'middle' is not allowed; allowed: one of 'all', 'upper', 'lower'"):
        Design({"ffn": {"layers": "middle"}})
    model = tiny("bert")  # 2 layers
    full = peft_space.count_budget(model, Design({"ffn": {"bottleneck": 4}}))
    half = peft_space.count_budget(model, design)
    assert half.analytic * 2 == full.analytic > 0
    assert layers_dimension.name in DIMENSIONS
