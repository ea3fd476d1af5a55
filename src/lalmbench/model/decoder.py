"""Decoder loading: a hub name, a local directory, a .gguf file, or the built-in `tiny-random`.

`tiny-random` is a small random-init Llama (2 layers, width 128) for tests and the CPU demo. Its
tokenizer is a real byte-level BPE tokenizer (Hugging Face `tokenizers`), trained deterministically
at load time on a fixed English word list shipped in this module, 1,024 tokens; being byte-level it
encodes any text, Chinese included. Nothing is downloaded.

Special tokens are checked against the model config: some tokenizers (the GGUF SmolLM2 among them)
name the wrong EOS, so the config's `eos_token_id` wins. The pad token is EOS when unset (protocol).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from lalmbench.errors import DecoderLoadError

TINY_RANDOM = "tiny-random"
EOS_TOKEN = "<|endoftext|>"

# Word list for the tiny tokenizer: common English, numbers, sound and music words, written here.
_TINY_CORPUS = """
the a an and or of to in on at for with from by is are was were be been it this that these those there here
what which who whom when where why how yes no not all any some one two three four five six seven eight nine
ten eleven twelve zero hundred thousand first second third many few more most less speech sound music audio
voice speaker speakers man woman male female child people person dog cat bird cow frog rooster pig sheep hen
insect crow rain sea waves crackling fire crickets chirping water drops wind pouring water toilet flush
thunderstorm crying baby sneezing clapping breathing coughing footsteps laughing brushing teeth snoring
drinking sipping door knock mouse click keyboard typing wood creaks can opening washing machine vacuum cleaner
clock alarm tick glass breaking helicopter chainsaw siren car horn engine train church bells airplane fireworks
hand saw air conditioner children playing drilling engine idling gun shot jackhammer street music guitar
piano violin drum drums bass flute organ trumpet brass reed string vocal keyboard mallet synth lead rock pop
jazz blues classical country disco hiphop metal reggae electronic experimental folk instrumental international
spoken genre note pitch low high loud quiet soft fast slow tone tones beep beeps noise silence same different
genuine spoof real fake happy sad angry neutral fear disgust surprise calm emotion language english chinese
german french spanish italian russian arabic japanese korean command activate deactivate increase decrease
bring change language lights lamp heat volume music kitchen bedroom washroom none newspaper juice socks shoes
left right up down on off stop go yes no forward backward follow learn visual bed bird cat dog happy house
marvin sheila tree wow transcribe classify identify detect count generate write caption describe the amount
audio speech sound event environment environmental urban vocal keyword intent action object command
do re mi fa sol la ti low mid high red green blue yellow orange purple black white
""".split()


@functools.lru_cache(maxsize=4)
def _tiny_tokenizer_json(vocab_size: int) -> str:
    """Train the tiny BPE once per process (about a second); callers get fresh copies."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    # Each word alone and after a space, so both "dog" and " dog" become single tokens.
    lines = [" ".join(_TINY_CORPUS[i:i + 12]) for i in range(0, len(_TINY_CORPUS), 12)] + _TINY_CORPUS
    tokenizer.train_from_iterator(lines, trainer=trainer)
    return tokenizer.to_str()


def _train_tiny_tokenizer(vocab_size: int = 1024):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer.from_str(_tiny_tokenizer_json(vocab_size))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN,
                                   bos_token=None, unk_token=None)


def tiny_random_decoder(seed: int = 0, hidden_size: int = 128, layers: int = 2):
    """A small random-init Llama decoder with the tiny byte-level BPE tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _train_tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=8192, tie_word_embeddings=True, rms_norm_eps=1e-5,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = LlamaForCausalLM(config)
        # Embeddings (tied to the LM head) of norm ~2 instead of ~0.16: with the final norm frozen, tiny
        # embeddings would cap every logit near zero and LoRA could never make an answer confident.
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, 2.0 / hidden_size ** 0.5)
    finally:
        torch.random.set_rng_state(generator_state)
    return model, tokenizer


def _fix_special_tokens(model, tokenizer) -> None:
    eos_id = getattr(model.config, "eos_token_id", None)
    if isinstance(eos_id, (list, tuple)):
        eos_id = eos_id[0] if eos_id else None
    if eos_id is not None and tokenizer.eos_token_id != eos_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(eos_id))
    if tokenizer.eos_token_id is None:
        raise DecoderLoadError("the decoder's tokenizer has no EOS token and the model config names none; "
                               "set eos_token_id in the model config")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def load_decoder(name: str, seed: int = 0):
    """(causal LM in float32, tokenizer) for `name`; errors say what is missing and how to get it."""
    if name == TINY_RANDOM:
        return tiny_random_decoder(seed)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name).expanduser()
    kwargs = {}
    if path.suffix == ".gguf":
        if not path.is_file():
            raise DecoderLoadError(f"decoder GGUF file {path} does not exist")
        source, kwargs["gguf_file"] = str(path.parent), path.name
    else:
        source = str(path) if path.exists() else name
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (f"download it once with `huggingface-cli download {name}` (or `hf download {name}`) while "
                f"online, pass a local directory or .gguf file as decoder_model_name, or use "
                f'--args \'{{"decoder_model_name": "tiny-random"}}\' for a quick offline run')
        raise DecoderLoadError(f"cannot load decoder {name!r}{' (HF_HUB_OFFLINE=1)' if offline else ''}: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}. {hint}") from exc
    if getattr(model, "hf_quantizer", None) is None:  # GGUF weights arrive dequantized and marked quantized
        model = model.float()
    _fix_special_tokens(model, tokenizer)
    return model, tokenizer
