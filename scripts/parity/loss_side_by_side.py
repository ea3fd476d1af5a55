"""Training loss and gradient norm on one batch, identical weights: item 4 (layout, positions) of
docs/fidelity.md, under protocol official.

    python scripts/parity/loss_side_by_side.py [--decoder tiny|smollm2|both]

Decoders: the 2-layer random Llama (batch of 4 demo clips of 0.9-1.2 s from three datasets with different
prompts) and the real SmolLM2-135M weights (clips of 8 / 1.5 / 3 / 6 s, so an encoder that returns a mask
leaves very different numbers of valid frames per row). Encoders: the same convolution returning a frame
mask (MaskConvEncoder) and returning None (NoMaskConvEncoder). For each pair:

  - eval mode (no dropout): batch loss and the gradient norm of LoRA + projector; target |diff| <= 1e-5;
  - train mode, both seeded alike before the forward (LoRA dropout draws the same masks when both models
    call it in the same order): loss; target |diff| <= 1e-5;
  - the same batch under protocol corrected, for contrast (packed rows; differs when the encoder masks).
"""

from __future__ import annotations

import argparse

import torch

from kit import (Tally, build_pair, demo_shard, grad_norm, lalmbench_batch, lalmbench_examples, published_collate,
                 published_samples, published_tokenizer, smollm2_decoder, tiny_decoder, write_lens_shard)

TOLERANCE = 1e-5
ENCODERS = ("parity_encoders.NoMaskConvEncoder", "parity_encoders.MaskConvEncoder")


def demo_batch_spec():
    """(shard, dataset, prompt, example index) of four demo clips: 1.2 s, 0.91 s, 0.90 s, 0.9 s."""
    melody = (demo_shard("melody"), "melody", "Transcribe the melody.")
    chords = (demo_shard("chords"), "chords", "Which notes sound together?")
    tones = (demo_shard("tones"), "tones", "Classify the tone.")
    return [(*melody, 0), (*chords, 4), (*tones, 1), (*melody, 1)]


def lens_batch_spec():
    shard = write_lens_shard()
    return [(shard, "lens", "Describe the sound.", i) for i in range(4)]


def both_batches(spec, tokenizer, protocol: str = "official"):
    published, ours = [], []
    for shard, name, prompt, index in spec:
        published.append(published_samples(shard, prompt, "label", tokenizer, training=True)[index])
        ours.append(lalmbench_examples(shard, name, "label", protocol)[index])
    prompts = {name: prompt for _, name, prompt, _ in spec}
    return published_collate(published, tokenizer), lalmbench_batch(ours, prompts, tokenizer, True, protocol)


def compare(tally: Tally, label: str, decoder: str, encoder: str, spec, lora_scale: float) -> None:
    short = encoder.split(".")[-1]
    torch.manual_seed(0)
    published, ours, _ = build_pair(encoder, decoder, lora_scale=lora_scale, protocol="official")
    tokenizer = published_tokenizer(decoder)
    published_batch, our_batch = both_batches(spec, tokenizer)
    with torch.no_grad():
        frame_mask = ours.encoded_frames(our_batch)[1]
    print(f"--- {label} decoder, {short}: valid frames per row {frame_mask.sum(-1).tolist()} of {frame_mask.shape[1]}")

    published.eval(); ours.eval()
    reference_loss = published(**published_batch).loss
    reference_loss.backward()
    our_loss = ours(our_batch)
    our_loss.backward()
    tally.compare(f"[{label}/{short}] batch loss, eval mode", reference_loss.item(), our_loss.item(), TOLERANCE)
    tally.compare(f"[{label}/{short}] grad norm LoRA+projector, eval mode",
                  grad_norm(published.parameters()), grad_norm(p for p in ours.parameters() if p.requires_grad), TOLERANCE)

    published.train(); ours.train()
    with torch.no_grad():
        torch.manual_seed(1234)
        reference_train = published(**published_batch).loss.item()
        torch.manual_seed(1234)
        our_train = ours(our_batch).item()
    tally.compare(f"[{label}/{short}] batch loss, train mode (dropout, same seed)", reference_train, our_train, TOLERANCE)

    # contrast: the same weights and examples under protocol corrected
    _, corrected, _ = build_pair(encoder, decoder, lora_scale=lora_scale, protocol="corrected")
    corrected.eval()
    _, corrected_batch = both_batches(spec, tokenizer, "corrected")
    with torch.no_grad():
        corrected_loss = corrected(corrected_batch).item()
    print(f"    contrast, protocol corrected: batch loss {corrected_loss:.6f} "
          f"(|diff| to the reference {abs(corrected_loss - reference_loss.item()):.3g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decoder", choices=("tiny", "smollm2", "both"), default="both")
    args = parser.parse_args()
    tally = Tally("loss and gradient norm (protocol official)")
    if args.decoder in ("tiny", "both"):
        for encoder in ENCODERS:
            compare(tally, "tiny", tiny_decoder(), encoder, demo_batch_spec(), lora_scale=0.05)
    if args.decoder in ("smollm2", "both"):
        for encoder in ENCODERS:
            compare(tally, "SmolLM2", smollm2_decoder(), encoder, lens_batch_spec(), lora_scale=0.01)
    tally.finish()


if __name__ == "__main__":
    main()
