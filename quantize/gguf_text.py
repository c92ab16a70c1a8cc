"""AITQE's language model as a llama.cpp `qwen2` GGUF: hyperparameters, tokenizer, tensors.

Tensor names come from the `gguf` package's own Qwen2 map (`model.layers.N.self_attn.q_proj` ->
`blk.N.attn_q`, no permutation for qwen2). The vocabulary keeps the checkpoint's embedding rows:
ids the tokenizer does not use become `[PADn]` tokens of type UNUSED, as llama.cpp's converter
writes them. The tokenizer is written as llama.cpp's byte-level BPE (`gpt2` model, merges) with
`tokenizer.ggml.pre = "qwen2"`: llama.cpp's pre-tokenizers are compiled in, chosen by that name, so
only a tokenizer whose split rule is exactly Qwen2's can be written. Two things of the source
tokenizer a GGUF cannot hold: its NFC normalizer, and tokenizing special-token strings as text. A
faithful driver therefore feeds the runtime's own prompt ids (runtime.engine.llama_cpp).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from gguf import MODEL_ARCH, GGUFWriter, TokenType, get_tensor_name_map

from quantize.gguf_file import Tensor
from runtime.errors import InputError
from runtime.model.checkpoint import Checkpoint

ARCH = "qwen2"
# Qwen2's pre-tokenizer split (tokenizer.json of Qwen/Qwen2-7B), which llama.cpp knows as "qwen2".
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PRE = [{"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": False},
             {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]  # (trim_offsets: offsets only)


def is_qwen2_split(pre: dict | None) -> bool:
    """Whether a tokenizer.json pre-tokenizer splits and maps bytes exactly as Qwen2's does."""
    parts = (pre or {}).get("pretokenizers") if (pre or {}).get("type") == "Sequence" else None
    return isinstance(parts, list) and len(parts) == 2 and all(
        {k: v for k, v in part.items() if k != "trim_offsets"} == want for part, want in zip(parts, QWEN2_PRE))


def _refuse(where, what: str) -> InputError:
    return InputError(f"{where}: {what}, which llama.cpp's qwen2 architecture cannot express; "
                      "this checkpoint cannot be exported as GGUF")


def check_llm(ck: Checkpoint) -> None:
    """One-line InputError for a language-model setting or tokenizer llama.cpp's qwen2 cannot reproduce."""
    llm, where = ck.config.llm, ck.config.root / "config.json"
    if llm.hidden_act != "silu":
        raise _refuse(where, f"hidden_act {llm.hidden_act!r} (qwen2 runs SiLU)")
    if llm.use_sliding_window:
        raise _refuse(where, "use_sliding_window true (qwen2 attends to the whole context)")
    if llm.rope_parameters.get("rope_type", "default") != "default":
        raise _refuse(where, f"rope type {llm.rope_parameters['rope_type']!r} (qwen2 here: plain RoPE)")
    vocabulary(ck)


def _tokenizer_json(ck: Checkpoint) -> dict:
    if not ck.tokenizer.is_fast:
        raise InputError(f"{ck.config.root}: the tokenizer has no tokenizer.json (a slow tokenizer); "
                         "add the fast tokenizer's tokenizer.json to export GGUF")
    return json.loads(ck.tokenizer.backend_tokenizer.to_str())


def vocabulary(ck: Checkpoint) -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) for `vocab_size` embedding rows, or a one-line InputError."""
    tj, where = _tokenizer_json(ck), ck.config.root / "tokenizer.json"
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or not is_qwen2_split(tj.get("pre_tokenizer")):
        raise InputError(f"{where}: not Qwen2's byte-level BPE with Qwen2's split rule; llama.cpp selects "
                         "pre-tokenizers by name (qwen2) and has none for this one, so it cannot be exported as GGUF")
    if (tj.get("normalizer") or {"type": "NFC"}).get("type") != "NFC":
        raise InputError(f"{where}: normalizer {tj['normalizer'].get('type')!r} is not Qwen2's NFC; "
                         "it cannot be exported as GGUF")
    rows = ck.config.llm.vocab_size
    by_id = {i: t for t, i in ck.tokenizer.get_vocab().items()}
    added = ck.tokenizer.added_tokens_decoder
    if by_id and max(by_id) >= rows:
        raise InputError(f"{where}: token id {max(by_id)} is past the model's {rows} embedding rows; "
                         "the tokenizer does not belong to these weights")
    tokens, types = [], []
    for i in range(rows):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, [int(t) for t in types], merges


def metadata(ck: Checkpoint, name: str, file_type: int) -> Callable[[GGUFWriter], None]:
    """The writer callback adding the qwen2 hyperparameters and the tokenizer."""
    llm, cfg = ck.config.llm, ck.config
    tokens, types, merges = vocabulary(ck)
    bos = cfg.raw.get("bos_token_id")

    def add(w: GGUFWriter) -> None:
        w.add_name(name)
        w.add_file_type(file_type)
        w.add_context_length(llm.max_position_embeddings)
        w.add_embedding_length(llm.hidden_size)
        w.add_block_count(llm.num_hidden_layers)
        w.add_feed_forward_length(llm.intermediate_size)
        w.add_head_count(llm.num_attention_heads)
        w.add_head_count_kv(llm.num_key_value_heads)
        w.add_rope_freq_base(float(llm.rope_parameters["rope_theta"]))
        w.add_layer_norm_rms_eps(float(llm.rms_norm_eps))
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        if cfg.eos.ids:
            w.add_eos_token_id(cfg.eos.ids[0])
        if isinstance(bos, int) and not isinstance(bos, bool) and 0 <= bos < len(tokens):
            w.add_bos_token_id(bos)
        w.add_pad_token_id(cfg.pad_token_id)
        w.add_add_bos_token(False)  # AITQE's prompt has no BOS

    return add


def tensors(ck: Checkpoint, kind) -> list[Tensor]:
    """The language model's tensors under llama.cpp's names (`output` left out when tied)."""
    llm = ck.config.llm
    names = get_tensor_name_map(MODEL_ARCH.QWEN2, llm.num_hidden_layers)
    out = []
    for hf, value in ck.llm.state_dict().items():
        if hf == "lm_head.weight" and llm.tie_word_embeddings:
            continue
        name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise InputError(f"{ck.config.root}: language-model tensor {hf!r} has no qwen2 GGUF name; "
                             "this checkpoint cannot be exported as GGUF")
        out.append(Tensor(name, value, kind))
    return out
