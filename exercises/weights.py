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
    raise NotImplementedError("exercise 11 (gpt2_weights), load_gpt2_weights: map each GPT-2 tensor to its parameter, transposing Conv1D weights and splitting c_attn")
