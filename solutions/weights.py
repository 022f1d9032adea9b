"""Exercise 11: load OpenAI's GPT-2 weights, in Hugging Face's layout, into a GPTModel."""

import torch

# Old checkpoints also store each block's causal mask; a GPTModel makes its own.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def load_gpt2_weights(model, state_dict: dict[str, torch.Tensor]):
    """Copy a GPT-2 checkpoint in Hugging Face's layout into ``model``, a ``GPTModel``; return ``model``.

    The checkpoint's names (``[transformer.]`` means the prefix may be there or not: it is in
    ``GPT2LMHeadModel.state_dict()``, not in the hub's ``model.safetensors``), for ``emb`` =
    ``emb_dim`` and block ``i``:

    =======================================================  =====================================
    checkpoint (shape)                                        model
    =======================================================  =====================================
    ``[transformer.]wte.weight`` (vocab, emb)                 ``tok_emb.weight``
    ``[transformer.]wpe.weight`` (context, emb)               ``pos_emb.weight``
    ``h.i.ln_1.weight``, ``.bias`` (emb,)                     ``trf_blocks[i].norm1.scale``, ``.shift``
    ``h.i.attn.c_attn.weight`` (emb, 3 emb), ``.bias``        ``att.W_query``, ``W_key``, ``W_value``
    ``h.i.attn.c_proj.weight`` (emb, emb), ``.bias``          ``att.out_proj``
    ``h.i.ln_2.weight``, ``.bias``                            ``norm2.scale``, ``.shift``
    ``h.i.mlp.c_fc.weight`` (emb, 4 emb), ``.bias``           ``ff.layers[0]``
    ``h.i.mlp.c_proj.weight`` (4 emb, emb), ``.bias``         ``ff.layers[2]``
    ``[transformer.]ln_f.weight``, ``.bias``                  ``final_norm.scale``, ``.shift``
    ``lm_head.weight`` (vocab, emb), optional                 ``out_head.weight``
    =======================================================  =====================================

    GPT-2's linear layers are ``Conv1D`` modules, whose weight is ``(in, out)``: the transpose of
    ``nn.Linear``'s ``(out, in)``. ``c_attn`` holds the query, key and value projections side by
    side along its last dimension, in that order. GPT-2 ties ``lm_head`` to ``wte``: a
    checkpoint without ``lm_head.weight`` gives ``out_head`` the ``wte`` weight (nothing to do
    when the model ties them too). The masks ``h.i.attn.bias`` and ``h.i.attn.masked_bias`` of
    old checkpoints are ignored.

    Values are copied into the model's existing parameters (under ``torch.no_grad()``), so the
    model keeps its dtype, device and tied weights.

    Raises:
        ValueError: when a tensor's shape differs from what the model needs (the message names the
            checkpoint's key and both shapes), when the model has no biases for the checkpoint's
            ``c_attn.bias`` (built with ``qkv_bias=False``), or when the checkpoint holds tensors
            the model has no place for (more blocks, say).
        KeyError: when the checkpoint lacks a tensor the model needs (the message names it).
    """
    # BEGIN SOLUTION 11: map each GPT-2 tensor to its parameter, transposing Conv1D weights and splitting c_attn
    prefix = "transformer." if any(k.startswith("transformer.") for k in state_dict) else ""
    used = set()

    def take(key: str, shape) -> torch.Tensor:
        key = key if key == "lm_head.weight" else prefix + key
        if key not in state_dict:
            raise KeyError(f"the checkpoint has no {key!r}")
        t = state_dict[key]
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{key} has shape {tuple(t.shape)} in the checkpoint, but the model needs {tuple(shape)}")
        used.add(key)
        return t

    def copy(param: torch.Tensor, value: torch.Tensor) -> None:
        with torch.no_grad():
            param.copy_(value)

    def norm(module, key: str) -> None:
        copy(module.scale, take(key + ".weight", module.scale.shape))
        copy(module.shift, take(key + ".bias", module.shift.shape))

    def conv1d(linear, key: str) -> None:  # Conv1D's (in, out) weight into nn.Linear's (out, in)
        copy(linear.weight, take(key + ".weight", linear.weight.shape[::-1]).T)
        copy(linear.bias, take(key + ".bias", linear.bias.shape))

    copy(model.tok_emb.weight, take("wte.weight", model.tok_emb.weight.shape))
    copy(model.pos_emb.weight, take("wpe.weight", model.pos_emb.weight.shape))
    for i, block in enumerate(model.trf_blocks):
        h, att = f"h.{i}.", block.att
        emb_in, emb = att.W_query.in_features, att.W_query.out_features
        norm(block.norm1, h + "ln_1")
        q, k, v = take(h + "attn.c_attn.weight", (emb_in, 3 * emb)).split(emb, dim=1)
        for linear, w in zip((att.W_query, att.W_key, att.W_value), (q, k, v)):
            copy(linear.weight, w.T)
        if prefix + h + "attn.c_attn.bias" in state_dict:
            if att.W_query.bias is None:
                raise ValueError(f"the checkpoint has {prefix + h}attn.c_attn.bias, but the model was built with qkv_bias=False")
            q, k, v = take(h + "attn.c_attn.bias", (3 * emb,)).split(emb)
            for linear, b in zip((att.W_query, att.W_key, att.W_value), (q, k, v)):
                copy(linear.bias, b)
        conv1d(att.out_proj, h + "attn.c_proj")
        norm(block.norm2, h + "ln_2")
        conv1d(block.ff.layers[0], h + "mlp.c_fc")
        conv1d(block.ff.layers[2], h + "mlp.c_proj")
    norm(model.final_norm, "ln_f")
    if "lm_head.weight" in state_dict:
        head = take("lm_head.weight", model.out_head.weight.shape)
        if model.out_head.weight is not model.tok_emb.weight:
            copy(model.out_head.weight, head)
    elif model.out_head.weight is not model.tok_emb.weight:
        copy(model.out_head.weight, take("wte.weight", model.out_head.weight.shape))
    unused = sorted(k for k in set(state_dict) - used if not k.endswith(IGNORED_SUFFIXES))
    if unused:
        raise ValueError(f"the model has no place for {len(unused)} tensor(s) of the checkpoint: {', '.join(unused[:5])}")
    return model
    # END SOLUTION
