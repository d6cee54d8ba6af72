"""Live agent assist on the caption stream: PII redaction, sentiment, intents, keywords and an
extractive call summary, as interpretation events beside the captions.

It is: text processing over finished captions, model-free except through the text models that
`model/engines.py` builds (`TextModels` of `model/api.py`), so importing it loads no model and
needs no extra. It is not: I/O (the session shell runs the blocking calls off the event loop).
"""
