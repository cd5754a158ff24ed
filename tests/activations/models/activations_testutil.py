"""Helpers shared by the activations tests (a uniquely named module: tests/ has no __init__.py)."""


def logits(handle, ids_BT, mask_BT):
    if handle.backend == "hf":
        return handle.model(input_ids=ids_BT, attention_mask=mask_BT).logits
    if handle.backend == "transformer_lens":
        return handle.model(ids_BT, attention_mask=mask_BT)
    with handle.model.trace({"input_ids": ids_BT, "attention_mask": mask_BT}):
        out = handle.model.output.save()
    return getattr(out, "value", out).logits
