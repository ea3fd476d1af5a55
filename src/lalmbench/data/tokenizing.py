"""Text -> token ids: each dataset's prompt and each example's target, as the decoder reads them.

A training example is fed as prompt ids followed by target ids (the loss covers the target only); in
evaluation the prompt alone starts generation and the target is the reference. How the ids are made
depends on the protocol:

  official   as the published pipeline: `tokenizer(prompt)` and `tokenizer(target)` with the tokenizer's
             own special-token default (a tokenizer that adds a BOS adds it to both); in training the EOS
             token's text is appended to the target text before tokenizing, and nothing is appended when
             the tokenizer has no EOS token
  corrected  no special tokens added to either, and the EOS id appended to the target in training
"""

from __future__ import annotations


class Tokenizing:
    """(prompt ids, target ids [+ EOS]) per dataset name, with prompt ids cached."""

    def __init__(self, tokenizer, prompts: dict[str, str], protocol: str = "official"):
        self.tokenizer, self.prompts, self.protocol = tokenizer, prompts, protocol
        self._prompt_ids: dict[str, list[int]] = {}

    def prompt_ids(self, dataset: str) -> list[int]:
        if dataset not in self._prompt_ids:
            prompt = self.prompts.get(dataset, "")
            if self.protocol == "official":
                # An empty prompt is tokenized too: with a BOS-adding tokenizer it still gives the BOS.
                ids = self.tokenizer(prompt)["input_ids"]
            else:
                ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
            self._prompt_ids[dataset] = list(ids)
        return self._prompt_ids[dataset]

    def target_ids(self, text: str, add_eos: bool) -> list[int]:
        if self.protocol == "official":
            eos = self.tokenizer.eos_token
            return list(self.tokenizer(text + eos if add_eos and eos else text)["input_ids"])
        target = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return target + [self.tokenizer.eos_token_id] if add_eos else target

    def __call__(self, dataset: str, text: str, add_eos: bool) -> tuple[list[int], list[int]]:
        return self.prompt_ids(dataset), self.target_ids(text, add_eos)

    def count(self, dataset: str, text: str) -> int:
        """Tokens of a training example (prompt + target + EOS): the text part of the length-sort key."""
        if self.protocol == "official":
            return len(self.prompt_ids(dataset)) + len(self.target_ids(text, add_eos=True))
        return len(self.prompt_ids(dataset)) + len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
