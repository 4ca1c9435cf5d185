"""Synthetic data from a teacher model (``ayar synth``), preference pairs from feedback (``ayar synth pairs``).

- :mod:`ayar.synth.config`: the recipe's ``synth:`` section (schema only);
- :mod:`ayar.synth.run`: the stage: requests, privacy, teacher, checks, provenance, outputs;
- :mod:`ayar.synth.tasks`: answer, generate, label, rewrite (a registry of small records);
- :mod:`ayar.synth.quality`: length, Turkish-language and duplicate checks;
- :mod:`ayar.synth.limiter`, :mod:`ayar.synth.cost`: rate limits; tokens and estimated price;
- :mod:`ayar.synth.score`, :mod:`ayar.synth.pairs`: scorers and best-vs-worst pairs.

The teacher client itself is :class:`ayar.eval.endpoint.ChatEndpoint` (cache, retries, concurrency), shared
with the evaluation judge; logit distillation (``method: distill``) lives in :mod:`ayar.train.distill`.
"""
