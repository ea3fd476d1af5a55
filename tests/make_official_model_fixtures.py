"""Print the published system's numbers that tests/test_official_model.py holds as fixtures.

Runs XARES-LLM 0.0.12 (commit 105be68) as an oracle, in its own environment (transformers 4.57.3,
peft 0.18.0; setup in the parity kit's README), on the pieces of tests/official_model_parts.py:

    PYTHONPATH=$PARITY_WORK/shim:$XARES_SRC/src:tests python tests/make_official_model_fixtures.py TOKENIZER_DIR

TOKENIZER_DIR: any Hugging Face tokenizer whose EOS is id 0 (the parity kit's tinydec); the published
collate pads text with it. Nothing of lalmbench is imported. Prints one JSON object:

- per encoder: the training loss and LoRA+projector gradient norm of one step on the fixed batch (model in
  train mode, as the published Trainer puts it, LoRA dropout set to 0 so the numbers are deterministic),
  the BatchNorm statistics that step left, and greedy tokens generated afterwards in eval mode (same
  prompt in every row, and mixed prompt lengths);
- the BatchNorm statistics the published checker leaves when it builds the model after seed 42.
"""

import json
import sys
import tempfile

import torch

import official_model_parts as parts


def build(encoder: str, decoder_dir: str):
    from xares_llm.modeling_audiollm import XaresLLMModel, XaresLLMModelConfig

    return XaresLLMModel(XaresLLMModelConfig(decoder_type=decoder_dir, audio_encoder_name=f"official_model_parts.{encoder}",
                                             audio_encoder_params={"dim": parts.ENCODER_DIM}))


def collate(tokenizer, prompts, targets):
    from xares_llm.audiowebdataset import AudioTextTokenWebdataset

    samples = []
    for clip, prompt, target in zip(parts.clips(), prompts, targets):
        samples.append({"audio": clip, "input_ids": prompt + target, "attention_mask": [1] * (len(prompt) + len(target)),
                        "labels": [-100] * len(prompt) + target})
    return AudioTextTokenWebdataset(data_urls=[], tokenizer=tokenizer)._default_collate_fn(samples)


def until_eos(rows):
    out = []
    for row in rows.tolist():
        out.append(row[: row.index(parts.EOS)] if parts.EOS in row else row)
    return out


def main(tokenizer_dir: str) -> None:
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM, set_seed

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert tokenizer.eos_token_id == parts.EOS
    decoder_dir = tempfile.mkdtemp()
    llama = LlamaForCausalLM(LlamaConfig(**parts.DECODER))
    llama.generation_config = GenerationConfig(bos_token_id=parts.EOS, eos_token_id=parts.EOS, pad_token_id=parts.EOS)
    llama.save_pretrained(decoder_dir)
    result = {"versions": {"transformers": __import__("transformers").__version__,
                           "peft": __import__("peft").__version__, "torch": torch.__version__}}
    for key, cls in parts.ENCODERS.items():
        model = build(cls.__name__, decoder_dir)
        set_canonical = parts.set_canonical_weights(model, names_are_published=True)
        for module in model.audio_encoder.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.reset_running_stats()
        model.train()  # what the published Trainer does before every training step
        for module in model.decoder.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0  # LoRA dropout off: deterministic numbers
        batch = collate(tokenizer, parts.row_prompts(), [list(t) for t in parts.TARGETS])
        loss = model(**batch).loss
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        entry = {"weights_set": set_canonical, "loss": loss.item(),
                 "grad_norm": float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))),
                 "grad_tensors": len(grads)}
        if key == "batchnorm":
            bn = model.audio_encoder.bn
            entry["bn_after_step"] = {"running_mean": bn.running_mean.tolist(), "running_var": bn.running_var.tolist(),
                                      "num_batches_tracked": int(bn.num_batches_tracked)}
        model.eval()
        for case, mixed in (("same_prompt", False), ("mixed_prompts", True)):
            prompts = parts.row_prompts(mixed)
            gen = collate(tokenizer, prompts, [[] for _ in prompts])
            gen.pop("labels")
            with torch.no_grad():
                ids = model.generate(**gen, repetition_penalty=1.05, max_new_tokens=12, do_sample=False,
                                     temperature=1.0, top_k=50, top_p=1.0)
            entry[f"generate_{case}"] = until_eos(ids)
        result[key] = entry
    set_seed(42)  # HF Trainer seeds, then builds the model (model_init); the checker runs the fresh encoder
    model = build("BatchNormConvEncoder", decoder_dir)
    bn = model.audio_encoder.bn
    result["checker_seed42"] = {"running_mean": bn.running_mean.tolist(), "running_var": bn.running_var.tolist(),
                                "num_batches_tracked": int(bn.num_batches_tracked)}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
