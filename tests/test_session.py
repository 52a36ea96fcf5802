"""ModelSession: an adapter is attached for a block and always removed, so the base comes back bit for bit."""

import pytest
import torch

from manyicl.config import LoraConfig
from manyicl.modeling import apply_lora, tiny_model
from manyicl.session import ModelSession


@pytest.fixture()
def adapter_dir(tmp_path, tok):
    """A saved LoRA adapter with strong, non-zero B matrices (a fresh LoRA is a no-op: B = 0)."""
    peft_model = apply_lora(tiny_model(len(tok)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 2.0)
    peft_model.save_pretrained(tmp_path / "adapter")
    return str(tmp_path / "adapter")


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.clone()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_adapter_changes_outputs_inside_and_the_base_comes_back(tok, adapter_dir):
    base = tiny_model(len(tok)).eval()
    ids = torch.tensor([tok("the cat sat on the mat")["input_ids"]])
    before, weights = _logits(base, ids), _state(base)
    session = ModelSession(base, tok, "tiny-random-llama")
    base_id = session.identity()
    with session.adapter(adapter_dir) as m:
        assert m is not base and session.adapter_path == adapter_dir
        assert not torch.equal(_logits(m, ids), before)  # the adapter really acts
        tuned_id = session.identity()
    assert session.model is base  # the same object, the LoRA layers taken out
    assert not any("lora" in n for n, _ in base.named_modules())
    assert torch.equal(_logits(base, ids), before)  # bit-identical
    assert _state(base).keys() == weights.keys()
    assert all(torch.equal(v, weights[k]) for k, v in _state(base).items())
    assert session.adapter_path is None and session.identity() == base_id
    assert tuned_id["adapter"] == adapter_dir and tuned_id["weights_sha256"] != base_id["weights_sha256"]
    assert base_id["name_or_path"] == "tiny-random-llama" and base_id["adapter"] is None


def test_the_adapter_is_removed_when_the_block_raises(tok, adapter_dir):
    base = tiny_model(len(tok)).eval()
    ids = torch.tensor([tok("an error inside the block")["input_ids"]])
    before = _logits(base, ids)
    session = ModelSession(base, tok, "tiny-random-llama")
    with pytest.raises(RuntimeError, match="boom"):
        with session.adapter(adapter_dir) as m:
            assert not torch.equal(_logits(m, ids), before)
            raise RuntimeError("boom")
    assert session.model is base and session.adapter_path is None
    assert not any("lora" in n for n, _ in base.named_modules())
    assert torch.equal(_logits(base, ids), before)
    with session.adapter(adapter_dir) as m:  # and it can be attached again afterwards
        assert not torch.equal(_logits(m, ids), before)
    assert torch.equal(_logits(base, ids), before)


def test_no_adapter_is_the_base_itself_and_blocks_do_not_nest(tok, adapter_dir):
    base = tiny_model(len(tok)).train()
    session = ModelSession(base, tok, "tiny-random-llama")
    with session.adapter(None) as m:
        assert m is base and not m.training  # scoring always runs in eval mode
    with session.adapter(adapter_dir):
        with pytest.raises(RuntimeError, match="already attached"):
            with session.adapter(adapter_dir):
                pass
    assert not any("lora" in n for n, _ in base.named_modules())


def test_attached_takes_a_fresh_lora_and_refuses_a_model_it_cannot_unload(tok):
    base = tiny_model(len(tok)).eval()
    session = ModelSession(base, tok, "tiny-random-llama")
    with session.attached(lambda b: apply_lora(b, LoraConfig(r=2, target_modules=["q_proj"]))) as m:
        assert any("lora" in n for n, _ in m.named_parameters())
    assert session.model is base and not any("lora" in n for n, _ in base.named_modules())
    with pytest.raises(TypeError, match="PEFT"):
        with session.attached(lambda b: b):
            pass


def test_load_reads_the_base_without_its_adapter(adapter_dir):
    from manyicl.config import ModelConfig

    session = ModelSession.load(
        ModelConfig(name_or_path="tiny-random-llama", dtype="float32", adapter=adapter_dir)
    )
    assert not any("lora" in n for n, _ in session.model.named_modules())
    assert session.identity()["name_or_path"] == "tiny-random-llama"
