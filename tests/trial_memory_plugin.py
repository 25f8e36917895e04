"""A plugin module (imported by Ray's workers through the spec's ``plugins``) with a design that really fails inside
a training step: the functional form ``fails_at_step_3`` is ReLU until the forward pass of the third optimiser step,
where it raises halfway through the model, with AdamW's state built, gradients left from step 2 and an autograd
graph half built (what a CUDA out-of-memory error inside the forward pass leaves behind). The preset ``faulty_ffn``
puts it at the FFN, as a parallel adapter."""

import torch

from peft_space import register_preset
from peft_space.paper import FORM, Form

LAYERS = 6  # MiniLM's: one call per layer and forward pass
FAIL_AT = 2 * LAYERS + LAYERS // 2 + 1  # micro_batch == batch_size: the third step's forward pass, in layer 4


class FailsAtStep3:
    """ReLU that counts its calls under autograd (training, not evaluation) and raises on call ``FAIL_AT``."""

    calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            FailsAtStep3.calls += 1
            if FailsAtStep3.calls == FAIL_AT:
                FailsAtStep3.calls = 0  # the next trial of this design, in this process, fails the same way
                raise RuntimeError("simulated out of memory inside the forward pass of step 3")
        return torch.relu(x)


if "fails_at_step_3" not in FORM.registry:
    FORM.register(Form("fails_at_step_3", "ReLU that raises in the forward pass of step 3", activation=FailsAtStep3()))
    register_preset("faulty_ffn", "a parallel adapter at the FFN that fails in step 3",
                    ffn={"form": "fails_at_step_3", "insertion": "parallel", "composition": "add", "init": "bert"})
