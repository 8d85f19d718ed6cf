"""Questions in plain words -> the structured queries the API answers.

    from edge_runtime.query.ask import read_question, StreamClock, AskError
    r = read_question("when was the oat milk bagged in the last 10 minutes?", labels=engine.labels,
                      products=catalog.names(), clock=StreamClock(stream_now=7200.0))
    r.query   # {"type": "time", "activity": "bag", "product": "oat milk", "start": 6600.0, "end": 7200.0}

Modules: ``times`` (time phrases -> stream seconds through a StreamClock), ``names`` (matching words
to labels and products: a WordLlama text encoder, or plain string similarity), ``reader`` (the
question's kind, its names, the Reading).
"""
from edge_runtime.query.ask.names import EncoderUnavailable, SynonymError, load_synonyms
from edge_runtime.query.ask.reader import AskError, Reader, Reading, read_question
from edge_runtime.query.ask.times import StreamClock

__all__ = ["AskError", "EncoderUnavailable", "Reader", "Reading", "StreamClock", "SynonymError", "load_synonyms",
           "read_question"]
