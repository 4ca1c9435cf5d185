"""Tokenizer efficiency on Turkish text (:mod:`.report`) and vocabulary extension (:mod:`.extend`)."""
