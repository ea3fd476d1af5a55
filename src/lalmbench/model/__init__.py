"""The audio LLM: frozen encoder -> Linear projector -> causal LM decoder with LoRA."""
